// Command apiextensions-apiserver is k8s.io/apiextensions-apiserver with
// discovery turned back on.
//
// Run standalone, the upstream server answers 404 on /apis: its
// Config.Complete turns discovery off because inside kube-apiserver the
// aggregator serves it. kubectl, RESTMappers and anything else set up from
// discovery then fail against it, where a real OpenShift answers. This
// wrapper enables discovery after Complete and keeps the unaggregated group
// list (/apis) in step with the established CRDs; /apis/<group> and
// /apis/<group>/<version>, and the aggregated form of /apis, are already
// served by the upstream CRD handler and discovery controller.
package main

import (
	"context"
	"os"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	listers "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/cli"
	"k8s.io/klog/v2"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	cmd := &cobra.Command{
		Use:   "apiextensions-apiserver",
		Short: "Launch an API extensions API server that serves discovery",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return run(c.Context(), o)
		},
	}
	cmd.SetContext(ctx)
	o.AddFlags(cmd.Flags())
	os.Exit(cli.Run(cmd))
}

func run(ctx context.Context, o *options.CustomResourceDefinitionsServerOptions) error {
	config, err := o.Config()
	if err != nil {
		return err
	}
	completed := config.Complete()
	completed.GenericConfig.EnableDiscovery = true
	server, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}

	crds := server.Informers.Apiextensions().V1().CustomResourceDefinitions()
	groups := &crdGroups{
		lister:  crds.Lister(),
		manager: server.GenericAPIServer.DiscoveryGroupManager,
		listed:  map[string]bool{},
	}
	resync := func(any) { groups.sync() }
	if _, err := crds.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    resync,
		UpdateFunc: func(_, obj any) { resync(obj) },
		DeleteFunc: resync,
	}); err != nil {
		return err
	}
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// crdGroups lists in /apis every group that has an established CRD, with
// the versions those CRDs serve, and drops a group when its last CRD goes.
type crdGroups struct {
	lister  listers.CustomResourceDefinitionLister
	manager discovery.GroupManager
	// listed holds the groups this wrapper added, so a group the server
	// registered itself (apiextensions.k8s.io) is never removed. Only the
	// informer's single handler goroutine touches it.
	listed map[string]bool
}

func (g *crdGroups) sync() {
	all, err := g.lister.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "listing CRDs for discovery")
		return
	}
	versions := map[string]map[string]bool{}
	for _, crd := range all {
		if !apihelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) || crd.DeletionTimestamp != nil {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			if versions[crd.Spec.Group] == nil {
				versions[crd.Spec.Group] = map[string]bool{}
			}
			versions[crd.Spec.Group][v.Name] = true
		}
	}
	for group, served := range versions {
		names := make([]string, 0, len(served))
		for v := range served {
			names = append(names, v)
		}
		// The preferred version is the one kube's own ordering ranks first
		// (v2 > v1 > v1beta1), as the aggregated CRD discovery does.
		sort.Slice(names, func(i, j int) bool {
			return version.CompareKubeAwareVersionStrings(names[i], names[j]) > 0
		})
		apiGroup := metav1.APIGroup{Name: group}
		for _, v := range names {
			apiGroup.Versions = append(apiGroup.Versions, metav1.GroupVersionForDiscovery{
				GroupVersion: group + "/" + v,
				Version:      v,
			})
		}
		apiGroup.PreferredVersion = apiGroup.Versions[0]
		g.manager.AddGroup(apiGroup)
		g.listed[group] = true
	}
	for group := range g.listed {
		if versions[group] == nil {
			g.manager.RemoveGroup(group)
			delete(g.listed, group)
		}
	}
}
