/**
 * Native kernels for the parts of a training step that the wasm backend runs one element at a
 * time in scalar code. They cover GELU and SiLU with their derivatives, the softmax cross-entropy
 * of the LM head's logit rows, and the rebuild of 4-bit quantized weights. They come from the
 * same optional package as the native matmul (`native/blas/src/kernels.c`) and are registered as
 * tfjs kernels of the wasm backend, so they read and write the wasm heap in place.
 *
 * Measured per element on a 2-core AMD EPYC (`npm run bench -- --quick --profile` for the tfjs
 * ops, the binding called directly for the native ones): GELU costs about 36 ns through tfjs ops
 * (Pow, Tanh and five element-wise kernels) and 1.3 ns natively. The softmax cross-entropy over
 * the vocabulary costs about 12 ns through tfjs ops (Exp alone 6.7) and 1.6 ns natively.
 *
 * Callers ask `nativeKernelsActive()` first and otherwise compose the same function from tfjs
 * operations, so every backend computes the same values.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The kernel part of the binding's exports. */
export interface KernelBinding {
  geluTanh(x: Float32Array, out: Float32Array): void;
  geluTanhGrad(x: Float32Array, dy: Float32Array, out: Float32Array): void;
  silu(x: Float32Array, out: Float32Array): void;
  siluGrad(x: Float32Array, dy: Float32Array, out: Float32Array): void;
  crossEntropy(logits: Float32Array, rows: number, vocab: number, targets: Int32Array, losses: Float32Array, grad: Float32Array, scale: number): void;
  dequantize4bit(codes: Int32Array, codebook: Float32Array, absmax: Float32Array, blocksize: number, count: number, out: Float32Array): void;
}

/** The parts of tfjs-backend-wasm's `BackendWasm` the kernels read. */
interface WasmBackendView {
  wasm: { HEAPF32: Float32Array; HEAP32: Int32Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const KERNEL_NAMES = {
  geluTanh: 'LoraStudioGeluTanh',
  geluTanhGrad: 'LoraStudioGeluTanhGrad',
  silu: 'LoraStudioSilu',
  siluGrad: 'LoraStudioSiluGrad',
  crossEntropy: 'LoraStudioCrossEntropy',
  dequantize4bit: 'LoraStudioDequantize4bit',
} as const;

let registered = false;

/** Checks that the binding exports the kernels (a binding built before they existed does not). */
export function hasKernels(binding: object): binding is KernelBinding {
  return Object.keys(KERNEL_NAMES).every((method) => typeof (binding as Record<string, unknown>)[method] === 'function');
}

/** Registers the kernels for the wasm backend once. */
export function registerNativeKernels(binding: KernelBinding): void {
  if (registered) return;
  const floats = (backend: WasmBackendView, info: tf.TensorInfo) => {
    const start = backend.dataIdMap.get(info.dataId).memoryOffset / 4;
    return backend.wasm.HEAPF32.subarray(start, start + tf.util.sizeFromShape(info.shape));
  };
  const ints = (backend: WasmBackendView, info: tf.TensorInfo) => {
    const start = backend.dataIdMap.get(info.dataId).memoryOffset / 4;
    return backend.wasm.HEAP32.subarray(start, start + tf.util.sizeFromShape(info.shape));
  };

  // Element-wise kernels: `x` (and `dy` for a derivative) in, one output of x's shape.
  const elementwise = (name: string, run: (x: Float32Array, out: Float32Array, dy?: Float32Array) => void) =>
    tf.registerKernel({
      kernelName: name,
      backendName: 'wasm',
      kernelFunc: ({ inputs, backend }) => {
        const view = backend as unknown as WasmBackendView;
        const x = inputs.x as tf.TensorInfo;
        const out = view.makeOutput(x.shape, 'float32');
        // Views are taken after makeOutput: its allocation may grow the heap and detach older ones.
        const dy = inputs.dy ? floats(view, inputs.dy as tf.TensorInfo) : undefined;
        run(floats(view, x), floats(view, out), dy);
        return out;
      },
    });

  elementwise(KERNEL_NAMES.geluTanh, (x, out) => binding.geluTanh(x, out));
  elementwise(KERNEL_NAMES.geluTanhGrad, (x, out, dy) => binding.geluTanhGrad(x, dy!, out));
  elementwise(KERNEL_NAMES.silu, (x, out) => binding.silu(x, out));
  elementwise(KERNEL_NAMES.siluGrad, (x, out, dy) => binding.siluGrad(x, dy!, out));

  tf.registerKernel({
    kernelName: KERNEL_NAMES.crossEntropy,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const view = backend as unknown as WasmBackendView;
      const logits = inputs.logits as tf.TensorInfo;
      const targets = inputs.targets as tf.TensorInfo;
      const [rows, vocab] = logits.shape;
      const losses = view.makeOutput([rows], 'float32');
      const grad = view.makeOutput([rows, vocab], 'float32');
      binding.crossEntropy(floats(view, logits), rows, vocab, ints(view, targets), floats(view, losses), floats(view, grad), (attrs as { scale: number }).scale);
      return [losses, grad];
    },
  });

  tf.registerKernel({
    kernelName: KERNEL_NAMES.dequantize4bit,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const view = backend as unknown as WasmBackendView;
      const { blocksize, count } = attrs as { blocksize: number; count: number };
      const out = view.makeOutput([count], 'float32');
      binding.dequantize4bit(
        ints(view, inputs.codes as tf.TensorInfo),
        floats(view, inputs.codebook as tf.TensorInfo),
        floats(view, inputs.absmax as tf.TensorInfo),
        blocksize,
        count,
        floats(view, out),
      );
      return out;
    },
  });
  registered = true;
}

/** True when the kernels are registered and the active backend is wasm. */
export function nativeKernelsActive(): boolean {
  return registered && tf.getBackend() === 'wasm';
}

function run(name: string, inputs: tf.NamedTensorMap, attrs: Record<string, number> = {}): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(name, inputs, attrs);
}

/** GELU, tanh form, of a float32 tensor. */
export function nativeGeluTanh(x: tf.Tensor): tf.Tensor {
  return run(KERNEL_NAMES.geluTanh, { x }) as tf.Tensor;
}

/** `dy · GELU'(x)`. */
export function nativeGeluTanhGrad(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return run(KERNEL_NAMES.geluTanhGrad, { x, dy }) as tf.Tensor;
}

/** SiLU `x·σ(x)`. */
export function nativeSilu(x: tf.Tensor): tf.Tensor {
  return run(KERNEL_NAMES.silu, { x }) as tf.Tensor;
}

/** `dy · SiLU'(x)`. */
export function nativeSiluGrad(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return run(KERNEL_NAMES.siluGrad, { x, dy }) as tf.Tensor;
}

/**
 * Per-row cross-entropy of `logits [rows, vocab]` against int32 `targets [rows]`, and its
 * gradient `(softmax − one_hot) · scale`. A row with a NaN or infinite logit gets a NaN loss.
 */
export function nativeCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, scale: number): { losses: tf.Tensor1D; grad: tf.Tensor2D } {
  const [losses, grad] = run(KERNEL_NAMES.crossEntropy, { logits, targets }, { scale }) as [tf.Tensor1D, tf.Tensor2D];
  return { losses, grad };
}

/** `codebook[code i] · absmax[i / blocksize]` for the first `count` codes of a packed int32 tensor. */
export function nativeDequantize4bit(codes: tf.Tensor1D, codebook: tf.Tensor1D, absmax: tf.Tensor1D, blocksize: number, count: number): tf.Tensor1D {
  return run(KERNEL_NAMES.dequantize4bit, { codes, codebook, absmax }, { blocksize, count }) as tf.Tensor1D;
}
