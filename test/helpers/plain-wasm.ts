// Imported first by tests that check the plain wasm path: without the native matmul and kernels,
// every product runs in XNNPACK's layout and the element-wise functions in tfjs operations.
process.env.LORA_STUDIO_NATIVE_MATMUL = '0';
