// Bundles the Node entry points (CLI, training worker, web bridge) into out/node/*.mjs.
//
// Why a bundle instead of running the TypeScript through a loader: @tensorflow/tfjs-core's
// CommonJS build (its package "main") registers no gradient functions, and its ES module build
// (its "module" field) cannot be imported by Node directly. Bundling with the "module" field
// gives one tfjs-core instance with every gradient, shared by the wasm and cpu backends.
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entries = {
  cli: 'src/cli/index.ts',
  worker: 'src/engine/worker.ts',
  server: 'src/server/main.ts',
};

const present = Object.fromEntries(Object.entries(entries).filter(([, file]) => fs.existsSync(path.join(root, file))));

// ES module output has no __dirname/require; some bundled CommonJS code (the wasm backend's
// loader) needs them.
const banner = [
  "import { createRequire as __createRequire } from 'node:module';",
  "import { fileURLToPath as __fileURLToPath } from 'node:url';",
  "import { dirname as __pathDirname } from 'node:path';",
  'const require = __createRequire(import.meta.url);',
  'const __filename = __fileURLToPath(import.meta.url);',
  'const __dirname = __pathDirname(__filename);',
].join('\n');

await build({
  absWorkingDir: root,
  entryPoints: present,
  outdir: 'out/node',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  mainFields: ['module', 'main'],
  sourcemap: 'linked',
  banner: { js: banner },
  external: ['better-sqlite3', 'electron', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'lora-studio-native-blas', 'playwright-core'],
  logLevel: 'warning',
});
