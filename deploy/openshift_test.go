package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"

	securityv1 "github.com/openshift/api/security/v1"
	templatev1 "github.com/openshift/api/template/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// openshiftDecoder knows the Kubernetes kinds, Template and
// SecurityContextConstraints, and fails on unknown fields.
func openshiftDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, templatev1.Install, securityv1.Install} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

// TestOpenShiftTemplate processes the template with its defaults and
// checks every object strictly, as TestKubernetesManifests does, and the
// SCC's limits.
func TestOpenShiftTemplate(t *testing.T) {
	dec := openshiftDecoder(t)
	raw, err := os.ReadFile("openshift/template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := dec.Decode(raw, nil, nil)
	if err != nil {
		t.Fatalf("template.yaml: %v", err)
	}
	tmpl, ok := obj.(*templatev1.Template)
	if !ok {
		t.Fatalf("template.yaml holds a %T", obj)
	}
	params := map[string]string{}
	for _, p := range tmpl.Parameters {
		if p.Value == "" {
			t.Errorf("parameter %s has no default", p.Name)
		}
		params[p.Name] = p.Value
	}
	for _, name := range []string{"NAMESPACE", "IMAGE", "BLOB_SOURCE", "NODE_SELECTOR_VALUE"} {
		if _, ok := params[name]; !ok {
			t.Errorf("no parameter %s", name)
		}
	}
	var ds *appsv1.DaemonSet
	var sa *corev1.ServiceAccount
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	var scc *securityv1.SecurityContextConstraints
	for i, o := range tmpl.Objects {
		doc := string(o.Raw)
		for name, value := range params {
			doc = strings.ReplaceAll(doc, "${"+name+"}", value)
		}
		if strings.Contains(doc, "${") {
			t.Errorf("object %d uses a parameter the template does not declare", i)
		}
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			ds = o
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.ClusterRole:
			role = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		case *securityv1.SecurityContextConstraints:
			scc = o
		default:
			t.Errorf("unexpected object %T", obj)
		}
	}
	if ds == nil || sa == nil || role == nil || binding == nil || scc == nil {
		t.Fatal("want a DaemonSet, a ServiceAccount, a ClusterRole, its binding and an SCC")
	}
	checkRBAC(t, role, binding, sa)
	checkDaemonSet(t, ds, sa)
	checkSCC(t, scc, sa)
}

// checkSCC: privileged containers and hostPath volumes, nothing of the
// host's network, processes or ports, for the daemon's ServiceAccount only.
func checkSCC(t *testing.T, scc *securityv1.SecurityContextConstraints, sa *corev1.ServiceAccount) {
	t.Helper()
	if !scc.AllowPrivilegedContainer || !scc.AllowHostDirVolumePlugin {
		t.Error("the SCC does not allow what the pod needs: a privileged container and hostPath volumes")
	}
	if scc.AllowHostNetwork || scc.AllowHostPID || scc.AllowHostIPC || scc.AllowHostPorts {
		t.Error("the SCC allows the host's network, processes, IPC or ports, which the pod does not use")
	}
	for _, v := range scc.Volumes {
		if !slices.Contains([]securityv1.FSType{securityv1.FSTypeHostPath, securityv1.FSTypeEmptyDir, securityv1.FSProjected}, v) {
			t.Errorf("the SCC allows %s volumes", v)
		}
	}
	if len(scc.AllowedCapabilities) > 0 || len(scc.Groups) > 0 {
		t.Errorf("the SCC grants capabilities %v or groups %v", scc.AllowedCapabilities, scc.Groups)
	}
	want := "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
	if !slices.Equal(scc.Users, []string{want}) {
		t.Errorf("the SCC is for %v, want only %s", scc.Users, want)
	}
}
