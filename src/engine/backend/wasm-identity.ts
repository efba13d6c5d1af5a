/**
 * An Identity kernel for the wasm backend that shares the input's memory instead of copying it.
 *
 * tfjs saves every tensor a gradient needs through `clone`, which runs Identity. The CPU and
 * WebGL backends return a reference to the same data (counted, freed with its last tensor);
 * tfjs-backend-wasm 4.22 copies it. In a training step that is one copy of every saved activation,
 * which costs memory until the backward pass ends and time (`Identity` took 62 ms of a 1 621 ms
 * step in `npm run bench -- --quick --profile`, smollm-135m-long). Tensor data is immutable in
 * tfjs (variables get new data on assign), so a shared reference is safe. The wasm backend
 * already counts references for reshapes.
 */
import * as tf from '@tensorflow/tfjs-core';

interface RefCountingBackend {
  incRef(dataId: object): void;
}

let installed = false;

/** Replaces the wasm backend's Identity kernel with the sharing one, once. */
export function shareIdentityOnWasm(): void {
  if (installed || !tf.getKernel(tf.Identity, 'wasm')) return;
  tf.unregisterKernel(tf.Identity, 'wasm');
  tf.registerKernel({
    kernelName: tf.Identity,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }) => {
      const x = inputs.x as tf.TensorInfo;
      (backend as unknown as RefCountingBackend).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  });
  installed = true;
}
