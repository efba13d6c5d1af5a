/**
 * The bytes a step really holds on the wasm backend, at their highest.
 *
 * `tf.memory().numBytes`, and the `peakBytes` of `tf.profile`, add the size of every tensor, so
 * tensors that share one buffer (reshapes, and the tensors saved for gradients) count once each.
 * This tracker counts buffers instead: it wraps the backend's allocation (`move`) and release
 * (`disposeData`, which frees only when the last tensor of a buffer goes) and keeps the running
 * total and its maximum. On other backends it reports nothing and callers use tfjs's figure.
 */
import * as tf from '@tensorflow/tfjs-core';

interface WasmBuffers {
  dataIdMap: { get(dataId: object): { shape: number[]; dtype: tf.DataType } | undefined };
  move(dataId: object, values: unknown, shape: number[], dtype: tf.DataType, refCount: number): void;
  disposeData(dataId: object, force?: boolean): boolean;
}

export interface LiveBytes {
  /** Highest total since the last `resetPeak`. */
  peak(): number;
  current(): number;
  resetPeak(): void;
  stop(): void;
}

function bytesOf(shape: number[], dtype: tf.DataType): number {
  return dtype === 'string' || dtype === 'complex64' ? 0 : tf.util.sizeFromShape(shape) * tf.util.bytesPerElement(dtype);
}

/** Starts counting on the active backend, between steps; null when it is not wasm. */
export function trackLiveBytes(): LiveBytes | null {
  if (tf.getBackend() !== 'wasm') return null;
  const backend = tf.backend() as unknown as WasmBuffers;
  const originalMove = backend.move;
  const originalDispose = backend.disposeData;
  // Between steps (weights, adapters, optimizer moments) tensors do not share buffers, so tfjs's
  // count is the starting total.
  let live = tf.memory().numBytes;
  let peak = live;

  backend.move = function (dataId, values, shape, dtype, refCount) {
    originalMove.call(this, dataId, values, shape, dtype, refCount);
    live += bytesOf(shape, dtype);
    peak = Math.max(peak, live);
  };
  backend.disposeData = function (dataId, force) {
    const data = this.dataIdMap.get(dataId);
    const freed = originalDispose.call(this, dataId, force);
    if (freed && data) live -= bytesOf(data.shape, data.dtype);
    return freed;
  };
  return {
    peak: () => peak,
    current: () => live,
    resetPeak: () => {
      peak = live;
    },
    stop: () => {
      backend.move = originalMove;
      backend.disposeData = originalDispose;
    },
  };
}
