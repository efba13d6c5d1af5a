// Builds the demo resources: bundles scripts/demo/pretrain.ts into out/scripts/ and runs it.
// Arguments are passed on (`--steps N`, `--out DIR`).
//
// The script is bundled rather than run through a TypeScript loader because the CommonJS build
// of @tensorflow/tfjs-core registers no gradient functions; scripts/node-bundle.mjs explains why.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForNode } from '../node-bundle.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const outfile = path.join(root, 'out', 'scripts', 'demo-pretrain.mjs');

await bundleForNode({ absWorkingDir: root, entryPoints: ['scripts/demo/pretrain.ts'], outfile, sourcemap: false });

const result = spawnSync(process.execPath, [outfile, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
