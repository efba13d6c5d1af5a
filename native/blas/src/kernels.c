/*
 * Element-wise and row-wise kernels of a training step that the wasm backend runs slowly: GELU
 * (tanh form) and SiLU with their derivatives, the softmax cross-entropy of logit rows with its
 * gradient, and the rebuild of a 4-bit quantized weight.
 *
 * Each loop is plain arithmetic that the compiler vectorizes. `exp` is computed inline (below)
 * instead of calling libm, because a call to the scalar `expf` would keep the loops scalar. The hot
 * loops are compiled twice, for AVX2 + FMA and for the x86-64 baseline, and the loader picks the
 * one the CPU supports.
 *
 * Exports (registered by init in sgemm.c):
 *   geluTanh(x, out)                 out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
 *   geluTanhGrad(x, dy, out)         out = dy · d/dx geluTanh(x)
 *   silu(x, out)                     out = x·σ(x)
 *   siluGrad(x, dy, out)             out = dy · σ(x)·(1 + x·(1 − σ(x)))
 *   crossEntropy(logits, rows, vocab, targets, losses, grad, scale)
 *                                    losses[r] = logsumexp(logits[r]) − logits[r, targets[r]]
 *                                    grad[r] = (softmax(logits[r]) − onehot(targets[r])) · scale
 *   dequantize4bit(codes, codebook, absmax, blocksize, count, out)
 *                                    out[i] = codebook[code i] · absmax[i / blocksize]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx2,fma", "default")))
#else
#define MULTIVERSION
#endif

/* √(2/π) and the cubic coefficient of the tanh approximation of GELU (Hendrycks & Gimpel, 2016). */
static const float GELU_C = 0.7978845608028654f;
static const float GELU_A = 0.044715f;

/*
 * e^x for x in [-87, 88], within 2 ulp of the true value: x = n·ln2 + r with |r| ≤ ln2/2, e^r by
 * its Taylor series to degree 7 (the remainder r^8/8! is below 6e-9), and 2^n built in the
 * exponent bits. Adding 1.5·2^23 rounds x·log2(e) to the nearest integer in the default rounding
 * mode without a rounding instruction, so the function vectorizes on the baseline SSE2.
 */
static inline float exp_inline(float x) {
  const float round_magic = 12582912.0f; /* 1.5 · 2^23 */
  const float log2e = 1.44269504088896341f;
  const float ln2_hi = 0.693359375f; /* ln 2 split so n·ln2_hi is exact for |n| < 2^9 */
  const float ln2_lo = -2.12194440e-4f;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float shifted = x * log2e + round_magic;
  float n = shifted - round_magic;
  float r = x - n * ln2_hi - n * ln2_lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union { float f; int32_t i; } bits;
  bits.f = shifted;
  int32_t exponent = bits.i - 0x4B400000; /* the integer n */
  union { int32_t i; float f; } scale;
  scale.i = (exponent + 127) << 23;
  return p * scale.f;
}

/* tanh(u) = 1 − 2 / (e^{2u} + 1); saturates to ±1 where e^{2u} is clamped. */
static inline float tanh_inline(float u) {
  return 1.0f - 2.0f / (exp_inline(2.0f * u) + 1.0f);
}

static inline float sigmoid_inline(float x) {
  return 1.0f / (1.0f + exp_inline(-x));
}

MULTIVERSION
static void gelu_tanh_loop(const float *x, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    float t = tanh_inline(GELU_C * (v + GELU_A * v * v * v));
    out[i] = 0.5f * v * (1.0f + t);
  }
}

MULTIVERSION
static void gelu_tanh_grad_loop(const float *x, const float *dy, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    float t = tanh_inline(GELU_C * (v + GELU_A * v * v * v));
    float slope = GELU_C * (1.0f + 3.0f * GELU_A * v * v);
    out[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * slope);
  }
}

MULTIVERSION
static void silu_loop(const float *x, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = x[i] * sigmoid_inline(x[i]);
}

MULTIVERSION
static void silu_grad_loop(const float *x, const float *dy, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float s = sigmoid_inline(x[i]);
    out[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
}

/* Writes e^(row[j] − shift) into out and returns their sum, kept in eight partial sums. */
MULTIVERSION
static float exp_shifted_sum(const float *row, float shift, float *out, size_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int lane = 0; lane < 8; lane++) {
      float e = exp_inline(row[j + lane] - shift);
      out[j + lane] = e;
      partial[lane] += e;
    }
  }
  float sum = 0.0f;
  for (; j < n; j++) {
    out[j] = exp_inline(row[j] - shift);
    sum += out[j];
  }
  for (int lane = 0; lane < 8; lane++) sum += partial[lane];
  return sum;
}

MULTIVERSION
static float row_max(const float *row, size_t n) {
  float partial[8];
  size_t j = 0;
  for (int lane = 0; lane < 8; lane++) partial[lane] = -INFINITY;
  for (; j + 8 <= n; j += 8) {
    for (int lane = 0; lane < 8; lane++) partial[lane] = row[j + lane] > partial[lane] ? row[j + lane] : partial[lane];
  }
  float best = -INFINITY;
  for (; j < n; j++) best = row[j] > best ? row[j] : best;
  for (int lane = 0; lane < 8; lane++) best = partial[lane] > best ? partial[lane] : best;
  return best;
}

MULTIVERSION
static void scale_loop(float *values, float factor, size_t n) {
  for (size_t i = 0; i < n; i++) values[i] *= factor;
}

/*
 * A NaN or infinite logit makes the row's loss NaN (the trainer reports NAN_LOSS); the inline exp
 * clamps its argument, so the check is explicit.
 */
static void cross_entropy_rows(const float *logits, size_t rows, size_t vocab, const int32_t *targets, float *losses,
                               float *grad, float scale) {
  for (size_t r = 0; r < rows; r++) {
    const float *row = logits + r * vocab;
    float *g = grad + r * vocab;
    float max = row_max(row, vocab);
    if (!isfinite(max)) {
      losses[r] = NAN;
      for (size_t j = 0; j < vocab; j++) g[j] = NAN;
      continue;
    }
    float sum = exp_shifted_sum(row, max, g, vocab);
    int32_t target = targets[r];
    losses[r] = logf(sum) + max - row[target];
    scale_loop(g, scale / sum, vocab);
    g[target] -= scale;
  }
}

/* Bit offsets of the eight 4-bit codes in one int32 of the packed layout: high nibble first per byte. */
static const int NIBBLE_SHIFTS[8] = {4, 0, 12, 8, 20, 16, 28, 24};

MULTIVERSION
static void dequantize_4bit(const int32_t *codes, const float *codebook, const float *absmax, size_t blocksize,
                            size_t count, float *out) {
  size_t words = count / 8;
  for (size_t w = 0; w < words; w++) {
    uint32_t word = (uint32_t)codes[w];
    for (int lane = 0; lane < 8; lane++) {
      size_t i = w * 8 + lane;
      out[i] = codebook[(word >> NIBBLE_SHIFTS[lane]) & 0xF] * absmax[i / blocksize];
    }
  }
  for (size_t i = words * 8; i < count; i++) {
    uint32_t word = (uint32_t)codes[i / 8];
    out[i] = codebook[(word >> NIBBLE_SHIFTS[i % 8]) & 0xF] * absmax[i / blocksize];
  }
}

/* ---- Node-API argument handling ---- */

/* Reads a typed array of the given type with at least `needed` elements; throws and returns 0 otherwise. */
static int read_array(napi_env env, napi_value value, const char *function, const char *name, napi_typedarray_type expected,
                      size_t needed, void **out, size_t *length_out) {
  char message[200];
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok || type != expected) {
    snprintf(message, sizeof(message), "%s: %s must be a %s", function, name,
             expected == napi_float32_array ? "Float32Array" : "Int32Array");
    napi_throw_type_error(env, "ERR_KERNEL_ARGUMENT", message);
    return 0;
  }
  if (length < needed) {
    snprintf(message, sizeof(message), "%s: %s has %zu elements, expected at least %zu", function, name, length, needed);
    napi_throw_range_error(env, "ERR_KERNEL_ARGUMENT", message);
    return 0;
  }
  *out = data;
  if (length_out != NULL) *length_out = length;
  return 1;
}

static int read_count(napi_env env, napi_value value, const char *function, const char *name, size_t *out) {
  char message[160];
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || number < 0 || number > 9007199254740991.0 ||
      number != (double)(int64_t)number) {
    snprintf(message, sizeof(message), "%s: %s must be a non-negative integer", function, name);
    napi_throw_range_error(env, "ERR_KERNEL_ARGUMENT", message);
    return 0;
  }
  *out = (size_t)number;
  return 1;
}

static napi_value wrong_arity(napi_env env, const char *usage) {
  napi_throw_error(env, "ERR_KERNEL_ARGUMENT", usage);
  return NULL;
}

/* The element-wise kernels: (x, out) or (x, dy, out), all Float32Array; the length is out's. */
static napi_value elementwise(napi_env env, napi_callback_info info, int with_dy, const char *function) {
  size_t argc = 3;
  napi_value argv[3];
  float *x, *dy = NULL, *out;
  size_t n;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < (size_t)(with_dy ? 3 : 2)) return wrong_arity(env, with_dy ? "expected (x, dy, out)" : "expected (x, out)");
  napi_value out_value = argv[with_dy ? 2 : 1];
  if (!read_array(env, out_value, function, "out", napi_float32_array, 0, (void **)&out, &n)) return NULL;
  if (!read_array(env, argv[0], function, "x", napi_float32_array, n, (void **)&x, NULL)) return NULL;
  if (with_dy && !read_array(env, argv[1], function, "dy", napi_float32_array, n, (void **)&dy, NULL)) return NULL;
  if (strcmp(function, "geluTanh") == 0) gelu_tanh_loop(x, out, n);
  else if (strcmp(function, "geluTanhGrad") == 0) gelu_tanh_grad_loop(x, dy, out, n);
  else if (strcmp(function, "silu") == 0) silu_loop(x, out, n);
  else silu_grad_loop(x, dy, out, n);
  return NULL;
}

static napi_value gelu_tanh(napi_env env, napi_callback_info info) { return elementwise(env, info, 0, "geluTanh"); }
static napi_value gelu_tanh_grad(napi_env env, napi_callback_info info) { return elementwise(env, info, 1, "geluTanhGrad"); }
static napi_value silu(napi_env env, napi_callback_info info) { return elementwise(env, info, 0, "silu"); }
static napi_value silu_grad(napi_env env, napi_callback_info info) { return elementwise(env, info, 1, "siluGrad"); }

static napi_value cross_entropy(napi_env env, napi_callback_info info) {
  const char *function = "crossEntropy";
  size_t argc = 7;
  napi_value argv[7];
  size_t rows, vocab;
  float *logits, *losses, *grad;
  int32_t *targets;
  double scale;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7) return wrong_arity(env, "crossEntropy: expected (logits, rows, vocab, targets, losses, grad, scale)");
  if (!read_count(env, argv[1], function, "rows", &rows) || !read_count(env, argv[2], function, "vocab", &vocab)) return NULL;
  if (vocab == 0) return wrong_arity(env, "crossEntropy: vocab must be at least 1");
  if (!read_array(env, argv[0], function, "logits", napi_float32_array, rows * vocab, (void **)&logits, NULL) ||
      !read_array(env, argv[3], function, "targets", napi_int32_array, rows, (void **)&targets, NULL) ||
      !read_array(env, argv[4], function, "losses", napi_float32_array, rows, (void **)&losses, NULL) ||
      !read_array(env, argv[5], function, "grad", napi_float32_array, rows * vocab, (void **)&grad, NULL)) {
    return NULL;
  }
  if (napi_get_value_double(env, argv[6], &scale) != napi_ok) return wrong_arity(env, "crossEntropy: scale must be a number");
  for (size_t r = 0; r < rows; r++) {
    if (targets[r] < 0 || (size_t)targets[r] >= vocab) {
      char message[160];
      snprintf(message, sizeof(message), "crossEntropy: target %d of row %zu is outside the vocabulary of %zu", targets[r], r, vocab);
      napi_throw_range_error(env, "ERR_KERNEL_ARGUMENT", message);
      return NULL;
    }
  }
  cross_entropy_rows(logits, rows, vocab, targets, losses, grad, (float)scale);
  return NULL;
}

static napi_value dequantize(napi_env env, napi_callback_info info) {
  const char *function = "dequantize4bit";
  size_t argc = 6;
  napi_value argv[6];
  size_t blocksize, count;
  int32_t *codes;
  float *codebook, *absmax, *out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) return wrong_arity(env, "dequantize4bit: expected (codes, codebook, absmax, blocksize, count, out)");
  if (!read_count(env, argv[3], function, "blocksize", &blocksize) || !read_count(env, argv[4], function, "count", &count)) return NULL;
  if (blocksize == 0) return wrong_arity(env, "dequantize4bit: blocksize must be at least 1");
  if (!read_array(env, argv[0], function, "codes", napi_int32_array, (count + 7) / 8, (void **)&codes, NULL) ||
      !read_array(env, argv[1], function, "codebook", napi_float32_array, 16, (void **)&codebook, NULL) ||
      !read_array(env, argv[2], function, "absmax", napi_float32_array, (count + blocksize - 1) / blocksize, (void **)&absmax, NULL) ||
      !read_array(env, argv[5], function, "out", napi_float32_array, count, (void **)&out, NULL)) {
    return NULL;
  }
  dequantize_4bit(codes, codebook, absmax, blocksize, count, out);
  return NULL;
}

void register_kernels(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback callback;
  } functions[] = {
      {"geluTanh", gelu_tanh}, {"geluTanhGrad", gelu_tanh_grad}, {"silu", silu}, {"siluGrad", silu_grad},
      {"crossEntropy", cross_entropy}, {"dequantize4bit", dequantize},
  };
  for (size_t i = 0; i < sizeof(functions) / sizeof(functions[0]); i++) {
    napi_value fn;
    napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].callback, NULL, &fn);
    napi_set_named_property(env, exports, functions[i].name, fn);
  }
}
