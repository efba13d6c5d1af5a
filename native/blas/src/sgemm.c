/*
 * Node-API binding of one CBLAS routine, cblas_sgemm, for the training engine's matrix products.
 *
 * The BLAS library is opened with dlopen when the module loads, so the build needs only a C
 * compiler and Node's headers, and any CBLAS that exports cblas_sgemm works (OpenBLAS first).
 * The reference BLAS (netlib) is rejected because it has no cache blocking and runs many times
 * slower than an optimized one.
 *
 * Exports:
 *   sgemm(m, n, k, a, b, out, transposeA, transposeB)  out[m, n] = op(a) · op(b), row-major
 *   setThreads(count)                                  BLAS worker threads, if the library allows it
 *   info()                                             { library, threads, config }
 * and the kernels of kernels.c.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

#include "kernels.h"

/* CBLAS enum values, fixed by the CBLAS standard (cblas.h of netlib and OpenBLAS). */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef void (*set_threads_fn)(int count);
typedef int (*get_threads_fn)(void);
typedef char *(*get_config_fn)(void);

static sgemm_fn blas_sgemm;
static set_threads_fn blas_set_threads;
static get_threads_fn blas_get_threads;
static get_config_fn blas_get_config;
static char blas_library[256];
static char load_error[1024];

/* Tries the libraries in order and keeps the first that exports cblas_sgemm from an optimized BLAS. */
static int open_blas(void) {
  const char *override = getenv("LORA_STUDIO_BLAS_LIBRARY");
  const char *candidates[] = {override, "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.so",
                              "libmkl_rt.so.2", "libmkl_rt.so", "libblis.so.4", "libblas.so.3"};
  size_t used = 0;
  load_error[0] = '\0';
  for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
    const char *name = candidates[i];
    if (name == NULL || name[0] == '\0') continue;
    void *handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
      used += snprintf(load_error + used, sizeof(load_error) - used, "%s%s: not found", used ? "; " : "", name);
      if (used >= sizeof(load_error)) used = sizeof(load_error) - 1;
      continue;
    }
    sgemm_fn sgemm = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    set_threads_fn set_threads = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
    get_config_fn get_config = (get_config_fn)dlsym(handle, "openblas_get_config");
    int is_optimized = set_threads != NULL || dlsym(handle, "MKL_Set_Num_Threads") != NULL ||
                       dlsym(handle, "bli_thread_set_num_threads") != NULL;
    if (sgemm == NULL || !is_optimized) {
      /* libblas.so.3 may be netlib's reference BLAS through the alternatives system. */
      used += snprintf(load_error + used, sizeof(load_error) - used, "%s%s: %s", used ? "; " : "", name,
                       sgemm == NULL ? "no cblas_sgemm" : "reference BLAS, not an optimized one");
      if (used >= sizeof(load_error)) used = sizeof(load_error) - 1;
      dlclose(handle);
      continue;
    }
    blas_sgemm = sgemm;
    blas_set_threads = set_threads;
    blas_get_threads = (get_threads_fn)dlsym(handle, "openblas_get_num_threads");
    blas_get_config = get_config;
    snprintf(blas_library, sizeof(blas_library), "%s", name);
    return 1;
  }
  return 0;
}

static napi_value throw_error(napi_env env, const char *code, const char *message) {
  napi_throw_error(env, code, message);
  return NULL;
}

static int read_dimension(napi_env env, napi_value value, const char *name, int32_t *out) {
  char message[128];
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || number < 0 || number > INT32_MAX ||
      number != (double)(int32_t)number) {
    snprintf(message, sizeof(message), "sgemm: %s must be a non-negative 32-bit integer", name);
    napi_throw_range_error(env, "ERR_BLAS_ARGUMENT", message);
    return 0;
  }
  *out = (int32_t)number;
  return 1;
}

/* Reads a Float32Array argument and checks that it contains at least `needed` elements. */
static int read_floats(napi_env env, napi_value value, const char *name, size_t needed, float **out) {
  char message[160];
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array) {
    snprintf(message, sizeof(message), "sgemm: %s must be a Float32Array", name);
    napi_throw_type_error(env, "ERR_BLAS_ARGUMENT", message);
    return 0;
  }
  if (length < needed) {
    snprintf(message, sizeof(message), "sgemm: %s has %zu elements, expected at least %zu", name, length, needed);
    napi_throw_range_error(env, "ERR_BLAS_ARGUMENT", message);
    return 0;
  }
  *out = (float *)data;
  return 1;
}

static napi_value sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  int32_t m, n, k;
  bool transpose_a = false, transpose_b = false;
  float *a, *b, *c;

  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) return throw_error(env, "ERR_BLAS_ARGUMENT", "sgemm: expected (m, n, k, a, b, out[, transposeA, transposeB])");
  if (!read_dimension(env, argv[0], "m", &m) || !read_dimension(env, argv[1], "n", &n) ||
      !read_dimension(env, argv[2], "k", &k)) {
    return NULL;
  }
  if (argc > 6) napi_get_value_bool(env, argv[6], &transpose_a);
  if (argc > 7) napi_get_value_bool(env, argv[7], &transpose_b);
  if (!read_floats(env, argv[3], "a", (size_t)m * k, &a) || !read_floats(env, argv[4], "b", (size_t)k * n, &b) ||
      !read_floats(env, argv[5], "out", (size_t)m * n, &c)) {
    return NULL;
  }
  if (m == 0 || n == 0) return NULL;
  if (k == 0) {
    memset(c, 0, (size_t)m * n * sizeof(float));
    return NULL;
  }

  /* Row-major: op(a) is [m, k], so a is [m, k] (lda = k) or, transposed, [k, m] (lda = m). */
  blas_sgemm(CBLAS_ROW_MAJOR, transpose_a ? CBLAS_TRANS : CBLAS_NO_TRANS, transpose_b ? CBLAS_TRANS : CBLAS_NO_TRANS,
             m, n, k, 1.0f, a, transpose_a ? m : k, b, transpose_b ? k : n, 0.0f, c, n);
  return NULL;
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t count;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !read_dimension(env, argv[0], "count", &count) || count < 1) {
    if (argc >= 1) napi_get_and_clear_last_exception(env, &argv[0]);
    return throw_error(env, "ERR_BLAS_ARGUMENT", "setThreads: count must be a positive integer");
  }
  if (blas_set_threads != NULL) blas_set_threads(count);
  return NULL;
}

static napi_value describe(napi_env env, napi_callback_info info) {
  napi_value result, value;
  (void)info;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, blas_library, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, result, "library", value);
  if (blas_get_threads != NULL) {
    napi_create_int32(env, blas_get_threads(), &value);
    napi_set_named_property(env, result, "threads", value);
  }
  if (blas_get_config != NULL) {
    napi_create_string_utf8(env, blas_get_config(), NAPI_AUTO_LENGTH, &value);
    napi_set_named_property(env, result, "config", value);
  }
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (blas_sgemm == NULL && !open_blas()) {
    char message[1200];
    snprintf(message, sizeof(message), "no optimized CBLAS library could be loaded (%s)", load_error);
    napi_throw_error(env, "ERR_BLAS_NOT_FOUND", message);
    return NULL;
  }
  napi_create_function(env, "sgemm", NAPI_AUTO_LENGTH, sgemm, NULL, &fn);
  napi_set_named_property(env, exports, "sgemm", fn);
  napi_create_function(env, "setThreads", NAPI_AUTO_LENGTH, set_threads, NULL, &fn);
  napi_set_named_property(env, exports, "setThreads", fn);
  napi_create_function(env, "info", NAPI_AUTO_LENGTH, describe, NULL, &fn);
  napi_set_named_property(env, exports, "info", fn);
  register_kernels(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
