// C helpers over libostree for the Go package: each takes plain C values,
// reports failure as a newly allocated message (free with g_free), and
// owns and releases every GObject and GVariant it makes, so that the Go
// side never handles GLib reference counts except for the few objects it
// keeps (repo, mutable tree, xattrs, content writer).
#pragma once

#include <ostree.h>

OstreeRepo *ex_repo_open(const char *path, int create, int user_mode, char **err);
void ex_repo_close(OstreeRepo *repo);

int ex_txn_begin(OstreeRepo *repo, char **err);
int ex_min_free_space(OstreeRepo *repo, guint64 *out, char **err);
int ex_txn_commit(OstreeRepo *repo, guint64 *objects_written, guint64 *bytes_written, char **err);
int ex_txn_abort(OstreeRepo *repo, char **err);
void ex_txn_set_ref(OstreeRepo *repo, const char *ref, const char *checksum);

GVariant *ex_xattrs_new(int n, const char *names, const guint8 *values, const gsize *lens);
void ex_variant_unref(GVariant *v);

int ex_write_regfiles_inline(OstreeRepo *repo, int n, const guint32 *uids, const guint32 *gids,
                             const guint32 *modes, GVariant *const *xattrs, const guint8 *buf, const gsize *offs,
                             const gsize *lens, char *out, char **err);
OstreeContentWriter *ex_regfile_begin(OstreeRepo *repo, guint32 uid, guint32 gid, guint32 mode,
                                      guint64 len, GVariant *xattrs, char **err);
int ex_regfile_write(OstreeContentWriter *w, const guint8 *buf, gsize len, char **err);
int ex_regfile_finish(OstreeContentWriter *w, char *out, char **err);
void ex_regfile_cancel(OstreeContentWriter *w);
int ex_write_symlink(OstreeRepo *repo, guint32 uid, guint32 gid, GVariant *xattrs, const char *target,
                     char *out, char **err);
int ex_write_dirmeta(OstreeRepo *repo, guint32 uid, guint32 gid, guint32 mode, GVariant *xattrs,
                     char *out, char **err);

OstreeMutableTree *ex_mtree_new(void);
void ex_mtree_free(OstreeMutableTree *t);
OstreeMutableTree *ex_mtree_dir(OstreeMutableTree *t, const char *name, char **err);
int ex_mtree_file(OstreeMutableTree *t, const char *name, const char *checksum, char **err);
void ex_mtree_set_meta(OstreeMutableTree *t, const char *checksum);

GVariantBuilder *ex_meta_new(void);
void ex_meta_string(GVariantBuilder *b, const char *key, const char *value);
void ex_meta_strv(GVariantBuilder *b, const char *key, int n, const char *values);
int ex_write_commit(OstreeRepo *repo, OstreeMutableTree *root, const char *subject, GVariantBuilder *meta,
                    guint64 time, char *out, char **err);

int ex_set_ref(OstreeRepo *repo, const char *ref, const char *checksum, char **err);
char *ex_list_refs(OstreeRepo *repo, const char *prefix, char **err);
int ex_resolve(OstreeRepo *repo, const char *ref, char *out, int *found, char **err);
int ex_fsck_file(OstreeRepo *repo, const char *checksum, char **err);
int ex_prune(OstreeRepo *repo, gint *total, gint *pruned, guint64 *bytes, char **err);
int ex_prune_estimate(OstreeRepo *repo, int nkeep, const char *keep, gint *total, gint *pruned, guint64 *bytes,
                      char **err);
void ex_trim_memory(void);
char *ex_commit_metadata(OstreeRepo *repo, const char *checksum, const char *key, char **err);
