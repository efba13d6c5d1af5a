/**
 * BatchMatMul for the wasm backend run by a native CBLAS `sgemm` (the optional package
 * `lora-studio-native-blas`, in `native/blas`).
 *
 * tfjs-backend-wasm 4.x runs one thread in Node. `npm run bench -- matmul` measured 20–30 GFLOP/s
 * for it in its fastest layout and 60–90 for OpenBLAS 0.3.21 `sgemm` with one thread, on the
 * same 2-core AMD EPYC.
 * The kernel reads both operands straight from the wasm heap and writes the product into the
 * output tensor's heap block, so nothing is copied. Transposed operands go to `sgemm` as
 * transpose flags. Forms it does not cover (non-float32, batch shapes that broadcast other
 * than by 1) run the wasm kernel that was registered before.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { hasKernels, registerNativeKernels } from './native-kernels';

/** The binding's exports (`native/blas/src/sgemm.c`). */
export interface BlasBinding {
  /** `out[m, n] = op(a) · op(b)`, row-major; `op` transposes when the flag is set. */
  sgemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, out: Float32Array, transposeA?: boolean, transposeB?: boolean): void;
  setThreads(count: number): void;
  info(): { library: string; threads?: number; config?: string };
}

/** Outcome of `enableNativeMatMul`. */
export interface NativeMatMulStatus {
  enabled: boolean;
  /** Library and thread count when enabled; why not and what to install otherwise. */
  detail: string;
}

/** The parts of tfjs-backend-wasm's `BackendWasm` the kernel reads. */
interface WasmBackendView {
  wasm: { HEAPF32: Float32Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const PACKAGE = 'lora-studio-native-blas';
const INSTALL_HINT = 'apt-get install build-essential libopenblas0-pthread, then npm rebuild lora-studio-native-blas';

const require = createRequire(import.meta.url);

let status: NativeMatMulStatus | undefined;

/** Loads the binding, or returns why it could not be loaded. */
export function loadBlasBinding(): { binding?: BlasBinding; reason?: string } {
  try {
    return { binding: require(PACKAGE) as BlasBinding };
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'MODULE_NOT_FOUND') return { reason: `${PACKAGE} is not installed` };
    return { reason: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * Replaces the wasm backend's BatchMatMul with the native one. Returns whether it did and why
 * not; calling it again returns the first outcome. `threads` sets the BLAS thread count
 * (default: the library's own, which for OpenBLAS is `OPENBLAS_NUM_THREADS` or every core).
 */
export function enableNativeMatMul(threads?: number): NativeMatMulStatus {
  if (status) return status;

  const { binding, reason } = loadBlasBinding();
  if (!binding) {
    status = { enabled: false, detail: `${reason}; to enable it: ${INSTALL_HINT}` };
    return status;
  }
  if (threads !== undefined) binding.setThreads(threads);

  const original = tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!original) {
    status = { enabled: false, detail: 'the wasm backend has no BatchMatMul kernel registered' };
    return status;
  }
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel({
    kernelName: tf.BatchMatMul,
    backendName: 'wasm',
    setupFunc: original.setupFunc,
    kernelFunc: (args) => nativeBatchMatMul(binding, original.kernelFunc, args),
  });

  const kernels = hasKernels(binding);
  if (kernels) registerNativeKernels(binding);

  const info = binding.info();
  const kernelNote = kernels ? 'with native element-wise, cross-entropy and 4-bit kernels' : 'without the native element-wise kernels (rebuild the package to add them)';
  status = { enabled: true, detail: `${info.library}, ${info.threads ?? 'default'} threads, ${kernelNote}` };
  return status;
}

/** Returns the outcome of `enableNativeMatMul`, if it was called. */
export function nativeMatMulStatus(): NativeMatMulStatus | undefined {
  return status;
}

function nativeBatchMatMul(binding: BlasBinding, fallback: tf.KernelFunc, args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallback(args) as tf.TensorInfo;

  const aRank = a.shape.length;
  const bRank = b.shape.length;
  const m = transposeA ? a.shape[aRank - 1] : a.shape[aRank - 2];
  const k = transposeA ? a.shape[aRank - 2] : a.shape[aRank - 1];
  const kB = transposeB ? b.shape[bRank - 1] : b.shape[bRank - 2];
  const n = transposeB ? b.shape[bRank - 2] : b.shape[bRank - 1];
  const batchShapeA = a.shape.slice(0, -2);
  const batchShapeB = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(batchShapeA);
  const batchB = tf.util.sizeFromShape(batchShapeB);

  // Broadcasting other than a batch of 1 against n (e.g. [2, 1] × [1, 3]) is left to tfjs.
  const sameBatch = batchA === batchB && tf.util.arraysEqual(batchShapeA, batchShapeB);
  if (k !== kB || !(sameBatch || batchA === 1 || batchB === 1)) return fallback(args) as tf.TensorInfo;

  const backend = args.backend as unknown as WasmBackendView;
  const batchShape = tf.broadcast_util.assertAndGetBroadcastShape(batchShapeA, batchShapeB);
  const out = backend.makeOutput([...batchShape, m, n], 'float32');
  if (m * n === 0) return out;

  // Read the heap after makeOutput: its malloc may grow the wasm memory and detach older views.
  const heap = backend.wasm.HEAPF32;
  const aBase = backend.dataIdMap.get(a.dataId).memoryOffset / 4;
  const bBase = backend.dataIdMap.get(b.dataId).memoryOffset / 4;
  const outBase = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
  const batch = Math.max(batchA, batchB);
  for (let i = 0; i < batch; i++) {
    const aOffset = aBase + (batchA === 1 ? 0 : i) * m * k;
    const bOffset = bBase + (batchB === 1 ? 0 : i) * k * n;
    const outOffset = outBase + i * m * n;
    binding.sgemm(
      m,
      n,
      k,
      heap.subarray(aOffset, aOffset + m * k),
      heap.subarray(bOffset, bOffset + k * n),
      heap.subarray(outOffset, outOffset + m * n),
      transposeA,
      transposeB,
    );
  }
  return out;
}
