// Install step: compiles the binding with node-gyp and exits 0 when that fails, because the
// binding is optional and the training engine falls back to the wasm matmul without it.
const { spawnSync } = require('node:child_process');

const nodeGyp = process.env.npm_config_node_gyp;
const command = nodeGyp ? process.execPath : 'node-gyp';
const args = nodeGyp ? [nodeGyp, 'rebuild', '--release'] : ['rebuild', '--release'];
const result = spawnSync(command, args, { cwd: __dirname, stdio: 'inherit' });
if (result.status !== 0) {
  process.stderr.write(
    'lora-studio-native-blas: build failed; training uses the wasm matmul. ' +
      'To enable the native one, install a C compiler and OpenBLAS (apt-get install build-essential libopenblas0-pthread), ' +
      'then run "npm rebuild lora-studio-native-blas".\n',
  );
}
process.exit(0);
