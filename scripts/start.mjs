// `npm start`: runs the desktop app through electron-vite (dev server with hot reload), or
// `npm start -- --preview` to run the production build. When the Electron binary is missing
// (its download is a blocked install script here), prints how to get it instead of a stack trace.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const electronDir = path.join(root, 'node_modules', 'electron');

function electronBinary() {
  const pathFile = path.join(electronDir, 'path.txt');
  if (!existsSync(pathFile)) return undefined;
  const relative = readFileSync(pathFile, 'utf8').trim();
  const base = process.env.ELECTRON_OVERRIDE_DIST_PATH ?? path.join(electronDir, 'dist');
  const binary = path.join(base, relative);
  return existsSync(binary) ? binary : undefined;
}

if (!existsSync(electronDir)) {
  process.stderr.write('The electron package is not installed. Run `npm install` first.\n');
  process.exit(1);
}

if (!electronBinary()) {
  process.stderr.write(
    [
      'The Electron binary is missing (node_modules/electron/dist was never downloaded: the',
      "package's install script did not run, because package.json allowScripts blocks it).",
      '',
      'To run the desktop app, on a machine with network access:',
      '  node node_modules/electron/install.js',
      '  npx @electron/rebuild -f -w better-sqlite3   # build SQLite for Electron\'s Node version',
      '  npm start',
      '(`npm rebuild better-sqlite3` switches it back for the CLI and tests.)',
      '',
      'To use the same UI in a browser instead:',
      '  npm run build && npm run serve',
      '',
    ].join('\n'),
  );
  process.exit(1);
}

const mode = process.argv.includes('--preview') ? 'preview' : 'dev';
const cli = path.join(root, 'node_modules', 'electron-vite', 'bin', 'electron-vite.js');
const child = spawn(process.execPath, [cli, mode], { cwd: root, stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(signal ? 1 : (code ?? 0)));
