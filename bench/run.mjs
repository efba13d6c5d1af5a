// Builds the benchmark into out/bench/*.mjs and runs it with the given arguments.
//
// The benchmark is bundled for the same reason as the Node entry points (scripts/build-node.mjs):
// tfjs-core's CommonJS build registers no gradient functions, so the bundle takes its ES module
// build through the "module" field. `bench:quant` resolves to the QLoRA module when
// src/engine/quant/model.ts exists, and to an empty stand-in otherwise, so the benchmark builds
// before that module is written.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForNode } from '../scripts/node-bundle.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quantModel = path.join(root, 'src', 'engine', 'quant', 'model.ts');


const quantPlugin = {
  name: 'bench-quant',
  setup(b) {
    b.onResolve({ filter: /^bench:quant$/ }, () => ({ path: 'bench:quant', namespace: 'bench-quant' }));
    b.onLoad({ filter: /.*/, namespace: 'bench-quant' }, () => {
      const exists = fs.existsSync(quantModel) && /export\s+(async\s+)?function\s+quantizeModel\b|export\s+(const|let)\s+quantizeModel\b|export\s*\{[^}]*\bquantizeModel\b/.test(fs.readFileSync(quantModel, 'utf8'));
      return exists
        ? { contents: `export { quantizeModel } from ${JSON.stringify(quantModel)};`, resolveDir: root, loader: 'ts' }
        : { contents: 'export const quantizeModel = undefined;', resolveDir: root, loader: 'ts' };
    });
  },
};

// `npm run bench -- matmul` runs the matmul layout table and `memory` the QLoRA and memory
// benchmark instead of the training benchmark.
const tool = ['matmul', 'memory'].includes(process.argv[2]) ? process.argv[2] : 'train';
const args = process.argv.slice(tool === 'train' ? 2 : 3);
const outfile = path.join(root, 'out', 'bench', `${tool}.mjs`);
await bundleForNode({
  absWorkingDir: root,
  entryPoints: [path.join(root, 'bench', `${tool}.ts`)],
  outfile,
  plugins: [quantPlugin],
});

const child = spawnSync(process.execPath, ['--enable-source-maps', '--max-old-space-size=8192', outfile, ...args], { cwd: root, stdio: 'inherit' });
process.exit(child.status ?? 1);
