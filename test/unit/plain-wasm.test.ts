// The fidelity and trainer-parity suites again, on the wasm backend without the native package,
// so the XNNPACK layouts and the tfjs-op versions of the fused functions keep matching
// transformers and PyTorch where the package cannot be built.
import '../helpers/plain-wasm';
import { afterAll, expect, it } from 'vitest';
import { nativeKernelsActive } from '../../src/engine/backend/native-kernels';
import { transposesAreFree } from '../../src/engine/models/matmul';
import './fidelity.test';
import './trainer-parity.test';

it('runs without the native matmul and kernels', () => {
  expect(transposesAreFree()).toBe(false);
  expect(nativeKernelsActive()).toBe(false);
});

afterAll(() => {
  delete process.env.LORA_STUDIO_NATIVE_MATMUL;
});
