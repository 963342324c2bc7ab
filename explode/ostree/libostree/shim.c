#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <string.h>

// fail moves a GError's message into *err and frees the GError.
static int fail(GError *error, char **err) {
  *err = g_strdup(error != NULL ? error->message : "unknown libostree error");
  g_clear_error(&error);
  return 0;
}

OstreeRepo *ex_repo_open(const char *path, int create, int user_mode, char **err) {
  GError *error = NULL;
  OstreeRepo *repo = NULL;
  if (create) {
    OstreeRepoMode mode = user_mode ? OSTREE_REPO_MODE_BARE_USER : OSTREE_REPO_MODE_BARE;
    // create_at opens an existing repo of any mode as it is.
    repo = ostree_repo_create_at(AT_FDCWD, path, mode, NULL, NULL, &error);
  } else {
    repo = ostree_repo_open_at(AT_FDCWD, path, NULL, &error);
  }
  if (repo == NULL) {
    fail(error, err);
    return NULL;
  }
  return repo;
}

void ex_repo_close(OstreeRepo *repo) { g_object_unref(repo); }

int ex_txn_begin(OstreeRepo *repo, char **err) {
  GError *error = NULL;
  if (!ostree_repo_prepare_transaction(repo, NULL, NULL, &error)) return fail(error, err);
  return 1;
}

int ex_min_free_space(OstreeRepo *repo, guint64 *out, char **err) {
  GError *error = NULL;
  if (!ostree_repo_get_min_free_space_bytes(repo, out, &error)) return fail(error, err);
  return 1;
}

int ex_txn_commit(OstreeRepo *repo, guint64 *objects_written, guint64 *bytes_written, char **err) {
  GError *error = NULL;
  OstreeRepoTransactionStats stats = {0};
  if (!ostree_repo_commit_transaction(repo, &stats, NULL, &error)) return fail(error, err);
  *objects_written = stats.metadata_objects_written + stats.content_objects_written;
  *bytes_written = stats.content_bytes_written;
  return 1;
}

int ex_txn_abort(OstreeRepo *repo, char **err) {
  GError *error = NULL;
  if (!ostree_repo_abort_transaction(repo, NULL, &error)) return fail(error, err);
  return 1;
}

void ex_txn_set_ref(OstreeRepo *repo, const char *ref, const char *checksum) {
  ostree_repo_transaction_set_ref(repo, NULL, ref, checksum);
}

// ex_xattrs_new builds the a(ayay) OSTree expects: names are NUL-separated
// in names, values back to back in values with their lengths in lens. OSTree
// stores names as bytestrings with their trailing NUL.
GVariant *ex_xattrs_new(int n, const char *names, const guint8 *values, const gsize *lens) {
  GVariantBuilder b;
  g_variant_builder_init(&b, G_VARIANT_TYPE("a(ayay)"));
  for (int i = 0; i < n; i++) {
    GVariant *value = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, values, lens[i], 1);
    g_variant_builder_add(&b, "(@ay@ay)", g_variant_new_bytestring(names), value);
    names += strlen(names) + 1;
    values += lens[i];
  }
  return g_variant_ref_sink(g_variant_builder_end(&b));
}

void ex_variant_unref(GVariant *v) {
  if (v != NULL) g_variant_unref(v);
}

static void hex_out(const char *checksum, char *out) {
  memcpy(out, checksum, OSTREE_SHA256_STRING_LEN);
  out[OSTREE_SHA256_STRING_LEN] = 0;
}

// ex_write_regfiles_inline writes n regular files whose bytes lie in buf,
// file i's at offs[i] for lens[i] bytes, and puts file i's checksum at
// out + 65 * i. It returns how many it wrote: n, or the index of the file
// that failed, with *err set. One call for many small files spares the
// Go side a thread handoff per file.
int ex_write_regfiles_inline(OstreeRepo *repo, int n, const guint32 *uids, const guint32 *gids,
                             const guint32 *modes, GVariant *const *xattrs, const guint8 *buf, const gsize *offs,
                             const gsize *lens, char *out, char **err) {
  static const guint8 empty[1];
  for (int i = 0; i < n; i++) {
    GError *error = NULL;
    const guint8 *data = lens[i] > 0 ? buf + offs[i] : empty;
    g_autofree char *csum =
        ostree_repo_write_regfile_inline(repo, NULL, uids[i], gids[i], modes[i], xattrs[i], data, lens[i], NULL, &error);
    if (csum == NULL) {
      fail(error, err);
      return i;
    }
    hex_out(csum, out + (gsize)i * (OSTREE_SHA256_STRING_LEN + 1));
  }
  return n;
}

OstreeContentWriter *ex_regfile_begin(OstreeRepo *repo, guint32 uid, guint32 gid, guint32 mode,
                                      guint64 len, GVariant *xattrs, char **err) {
  GError *error = NULL;
  OstreeContentWriter *w = ostree_repo_write_regfile(repo, NULL, uid, gid, mode, len, xattrs, &error);
  if (w == NULL) fail(error, err);
  return w;
}

int ex_regfile_write(OstreeContentWriter *w, const guint8 *buf, gsize len, char **err) {
  GError *error = NULL;
  if (!g_output_stream_write_all(G_OUTPUT_STREAM(w), buf, len, NULL, NULL, &error)) return fail(error, err);
  return 1;
}

int ex_regfile_finish(OstreeContentWriter *w, char *out, char **err) {
  GError *error = NULL;
  g_autofree char *csum = ostree_content_writer_finish(w, NULL, &error);
  g_object_unref(w);
  if (csum == NULL) return fail(error, err);
  hex_out(csum, out);
  return 1;
}

void ex_regfile_cancel(OstreeContentWriter *w) {
  // Closing without finishing leaves a temporary file in the transaction's
  // staging directory, which commit or abort removes.
  g_output_stream_close(G_OUTPUT_STREAM(w), NULL, NULL);
  g_object_unref(w);
}

int ex_write_symlink(OstreeRepo *repo, guint32 uid, guint32 gid, GVariant *xattrs, const char *target,
                     char *out, char **err) {
  GError *error = NULL;
  g_autofree char *csum = ostree_repo_write_symlink(repo, NULL, uid, gid, xattrs, target, NULL, &error);
  if (csum == NULL) return fail(error, err);
  hex_out(csum, out);
  return 1;
}

int ex_write_dirmeta(OstreeRepo *repo, guint32 uid, guint32 gid, guint32 mode, GVariant *xattrs,
                     char *out, char **err) {
  GError *error = NULL;
  g_autoptr(GFileInfo) info = g_file_info_new();
  g_file_info_set_attribute_uint32(info, "standard::type", G_FILE_TYPE_DIRECTORY);
  g_file_info_set_attribute_uint32(info, "unix::uid", uid);
  g_file_info_set_attribute_uint32(info, "unix::gid", gid);
  g_file_info_set_attribute_uint32(info, "unix::mode", mode);
  g_autoptr(GVariant) meta = g_variant_ref_sink(ostree_create_directory_metadata(info, xattrs));
  g_autofree guchar *bin = NULL;
  if (!ostree_repo_write_metadata(repo, OSTREE_OBJECT_TYPE_DIR_META, NULL, meta, &bin, NULL, &error))
    return fail(error, err);
  g_autofree char *csum = ostree_checksum_from_bytes(bin);
  hex_out(csum, out);
  return 1;
}

OstreeMutableTree *ex_mtree_new(void) { return ostree_mutable_tree_new(); }

void ex_mtree_free(OstreeMutableTree *t) { g_object_unref(t); }

// ex_mtree_dir returns the subdirectory borrowed: its parent keeps it alive
// for as long as the root lives, so only the root is ever freed.
OstreeMutableTree *ex_mtree_dir(OstreeMutableTree *t, const char *name, char **err) {
  GError *error = NULL;
  OstreeMutableTree *sub = NULL;
  if (!ostree_mutable_tree_ensure_dir(t, name, &sub, &error)) {
    fail(error, err);
    return NULL;
  }
  g_object_unref(sub);
  return sub;
}

int ex_mtree_file(OstreeMutableTree *t, const char *name, const char *checksum, char **err) {
  GError *error = NULL;
  if (!ostree_mutable_tree_replace_file(t, name, checksum, &error)) return fail(error, err);
  return 1;
}

void ex_mtree_set_meta(OstreeMutableTree *t, const char *checksum) {
  ostree_mutable_tree_set_metadata_checksum(t, checksum);
}

GVariantBuilder *ex_meta_new(void) { return g_variant_builder_new(G_VARIANT_TYPE("a{sv}")); }

void ex_meta_string(GVariantBuilder *b, const char *key, const char *value) {
  g_variant_builder_add(b, "{sv}", key, g_variant_new_string(value));
}

void ex_meta_strv(GVariantBuilder *b, const char *key, int n, const char *values) {
  GVariantBuilder arr;
  g_variant_builder_init(&arr, G_VARIANT_TYPE("as"));
  for (int i = 0; i < n; i++) {
    g_variant_builder_add(&arr, "s", values);
    values += strlen(values) + 1;
  }
  g_variant_builder_add(b, "{sv}", key, g_variant_builder_end(&arr));
}

int ex_write_commit(OstreeRepo *repo, OstreeMutableTree *root, const char *subject, GVariantBuilder *meta,
                    guint64 time, char *out, char **err) {
  GError *error = NULL;
  g_autoptr(GVariant) metadata = g_variant_ref_sink(g_variant_builder_end(meta));
  g_variant_builder_unref(meta);
  g_autoptr(GFile) root_file = NULL;
  if (!ostree_repo_write_mtree(repo, root, &root_file, NULL, &error)) return fail(error, err);
  g_autofree char *commit = NULL;
  if (!ostree_repo_write_commit_with_time(repo, NULL, subject, NULL, metadata, OSTREE_REPO_FILE(root_file), time,
                                          &commit, NULL, &error))
    return fail(error, err);
  hex_out(commit, out);
  return 1;
}

int ex_set_ref(OstreeRepo *repo, const char *ref, const char *checksum, char **err) {
  GError *error = NULL;
  if (!ostree_repo_set_ref_immediate(repo, NULL, ref, checksum, NULL, &error)) return fail(error, err);
  return 1;
}

// ex_list_refs returns "ref checksum\n" lines for refs under prefix.
char *ex_list_refs(OstreeRepo *repo, const char *prefix, char **err) {
  GError *error = NULL;
  g_autoptr(GHashTable) refs = NULL;
  if (!ostree_repo_list_refs_ext(repo, prefix, &refs, OSTREE_REPO_LIST_REFS_EXT_EXCLUDE_REMOTES, NULL, &error)) {
    fail(error, err);
    return NULL;
  }
  GString *s = g_string_new("");
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, refs);
  while (g_hash_table_iter_next(&it, &k, &v)) g_string_append_printf(s, "%s %s\n", (char *)k, (char *)v);
  return g_string_free(s, FALSE);
}

int ex_resolve(OstreeRepo *repo, const char *ref, char *out, int *found, char **err) {
  GError *error = NULL;
  g_autofree char *rev = NULL;
  if (!ostree_repo_resolve_rev(repo, ref, TRUE, &rev, &error)) return fail(error, err);
  *found = rev != NULL;
  if (rev != NULL) hex_out(rev, out);
  return 1;
}

int ex_fsck_file(OstreeRepo *repo, const char *checksum, char **err) {
  GError *error = NULL;
  if (!ostree_repo_fsck_object(repo, OSTREE_OBJECT_TYPE_FILE, checksum, NULL, &error)) return fail(error, err);
  return 1;
}

int ex_prune(OstreeRepo *repo, gint *total, gint *pruned, guint64 *bytes, char **err) {
  GError *error = NULL;
  if (!ostree_repo_prune(repo, OSTREE_REPO_PRUNE_FLAGS_REFS_ONLY, -1, total, pruned, bytes, NULL, &error))
    return fail(error, err);
  return 1;
}

// ex_prune_estimate counts the objects, and their bytes, that a prune would
// delete once every ref but the nkeep NUL-separated ones in keep were
// gone, and deletes nothing.
int ex_prune_estimate(OstreeRepo *repo, int nkeep, const char *keep, gint *total, gint *pruned, guint64 *bytes,
                      char **err) {
  GError *error = NULL;
  g_autoptr(GHashTable) reachable = ostree_repo_traverse_new_reachable();
  for (int i = 0; i < nkeep; i++) {
    g_autofree char *rev = NULL;
    if (!ostree_repo_resolve_rev(repo, keep, FALSE, &rev, &error)) return fail(error, err);
    if (!ostree_repo_traverse_commit_union(repo, rev, 0, reachable, NULL, &error)) return fail(error, err);
    keep += strlen(keep) + 1;
  }
  OstreeRepoPruneOptions opts = {.flags = OSTREE_REPO_PRUNE_FLAGS_NO_PRUNE, .reachable = reachable};
  if (!ostree_repo_prune_from_reachable(repo, &opts, total, pruned, bytes, NULL, &error)) return fail(error, err);
  return 1;
}

// ex_commit_metadata returns a commit's metadata value under key: a string
// as it is, an array of strings one per line, anything else printed as
// GVariant text. NULL with no *err means the key is absent.
char *ex_commit_metadata(OstreeRepo *repo, const char *checksum, const char *key, char **err) {
  GError *error = NULL;
  g_autoptr(GVariant) commit = NULL;
  if (!ostree_repo_load_variant(repo, OSTREE_OBJECT_TYPE_COMMIT, checksum, &commit, &error)) {
    fail(error, err);
    return NULL;
  }
  g_autoptr(GVariant) meta = g_variant_get_child_value(commit, 0);
  g_autoptr(GVariant) value = g_variant_lookup_value(meta, key, NULL);
  if (value == NULL) return NULL;
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) return g_variant_dup_string(value, NULL);
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING_ARRAY)) {
    g_autofree const gchar **strv = g_variant_get_strv(value, NULL);
    return g_strjoinv("\n", (gchar **)strv);
  }
  return g_variant_print(value, FALSE);
}

void ex_trim_memory(void) { malloc_trim(0); }
