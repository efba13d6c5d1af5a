// Builds the benchmark into out/bench/*.mjs and runs it with the given arguments.
//
// The benchmark is bundled for the same reason as the Node entry points (scripts/build-node.mjs):
// tfjs-core's CommonJS build registers no gradient functions, so the bundle takes its ES module
// build through the "module" field.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForNode } from '../scripts/node-bundle.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// `npm run bench -- matmul` runs the matmul layout table and `memory` the QLoRA and memory
// benchmark instead of the training benchmark.
const tool = ['matmul', 'memory'].includes(process.argv[2]) ? process.argv[2] : 'train';
const args = process.argv.slice(tool === 'train' ? 2 : 3);
const outfile = path.join(root, 'out', 'bench', `${tool}.mjs`);
await bundleForNode({
  absWorkingDir: root,
  entryPoints: [path.join(root, 'bench', `${tool}.ts`)],
  outfile,
});

const child = spawnSync(process.execPath, ['--enable-source-maps', '--max-old-space-size=8192', outfile, ...args], { cwd: root, stdio: 'inherit' });
process.exit(child.status ?? 1);
