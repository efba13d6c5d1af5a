#!/usr/bin/env node
// Entry point of the `lora-studio` command: runs the bundled CLI, building it first when a
// source checkout has not been built yet.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'out', 'node', 'cli.mjs');
if (!fs.existsSync(cli)) {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build-node.mjs')], { cwd: root, stdio: 'inherit' });
}
await import(pathToFileURL(cli).href);
