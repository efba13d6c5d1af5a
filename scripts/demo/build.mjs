// Builds the demo resources: bundles scripts/demo/pretrain.ts into out/scripts/ and runs it.
// Arguments are passed on (`--steps N`, `--out DIR`).
//
// The script is bundled rather than run through a TypeScript loader because the CommonJS build
// of @tensorflow/tfjs-core registers no gradient functions; scripts/build-node.mjs explains why.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const outfile = path.join(root, 'out', 'scripts', 'demo-pretrain.mjs');

// ES module output has no __dirname/require; the wasm backend's loader needs them.
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
  entryPoints: ['scripts/demo/pretrain.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  mainFields: ['module', 'main'],
  banner: { js: banner },
  external: ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu'],
  logLevel: 'warning',
});

const result = spawnSync(process.execPath, [outfile, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
