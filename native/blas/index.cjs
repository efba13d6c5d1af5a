// Loads the compiled binding. Throws with code ERR_BLAS_NOT_BUILT when the install step could not
// compile it, and ERR_BLAS_NOT_FOUND (from the binding) when no optimized CBLAS library is present.
const path = require('node:path');

const binary = path.join(__dirname, 'build', 'Release', 'lora_studio_blas.node');
let binding;
try {
  binding = require(binary);
} catch (error) {
  if (error && error.code === 'MODULE_NOT_FOUND') {
    const notBuilt = new Error(`${binary} was not built at install (no C compiler or node-gyp failure)`);
    notBuilt.code = 'ERR_BLAS_NOT_BUILT';
    throw notBuilt;
  }
  throw error;
}
module.exports = binding;
