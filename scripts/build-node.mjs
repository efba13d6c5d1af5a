// Bundles the Node entry points (CLI, training worker, web bridge) into out/node/*.mjs; see
// scripts/node-bundle.mjs for why they are bundled.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForNode } from './node-bundle.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entries = {
  cli: 'src/cli/index.ts',
  worker: 'src/engine/worker.ts',
  server: 'src/server/main.ts',
};

const present = Object.fromEntries(Object.entries(entries).filter(([, file]) => fs.existsSync(path.join(root, file))));

await bundleForNode({
  absWorkingDir: root,
  entryPoints: present,
  outdir: 'out/node',
  outExtension: { '.js': '.mjs' },
});
