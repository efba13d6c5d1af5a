/**
 * Build of the desktop app: main process (plus the training worker as a second entry once it
 * exists), the sandboxed preload as CommonJS, and the Vue renderer.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import vue from '@vitejs/plugin-vue';
import { defineConfig } from 'electron-vite';
import type { Plugin } from 'vite';

const root = import.meta.dirname;
const workerEntry = resolve(root, 'src/engine/worker.ts');

const mainInput: Record<string, string> = { index: resolve(root, 'src/main/index.ts') };
if (existsSync(workerEntry)) mainInput.worker = workerEntry;

/**
 * The dev server injects styles and HMR scripts inline, which the production CSP forbids; this
 * relaxes the meta tag for `electron-vite dev` only.
 */
function devContentSecurityPolicy(): Plugin {
  return {
    name: 'lora-studio:dev-csp',
    apply: 'serve',
    transformIndexHtml(html) {
      return html.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace("connect-src 'self'", "connect-src 'self' ws:");
    },
  };
}

export default defineConfig({
  main: {
    build: {
      outDir: 'out/main',
      // tfjs-core registers gradients only in its ES module build, so it is bundled rather than
      // loaded from node_modules, where Node would pick the CommonJS build.
      externalizeDeps: { exclude: ['@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-cpu', '@tensorflow/tfjs-backend-wasm'] },
      rolldownOptions: { input: mainInput },
    },
  },
  preload: {
    build: {
      outDir: 'out/preload',
      // Sandboxed preloads cannot load ES modules or most Node modules: one CommonJS file.
      externalizeDeps: false,
      lib: { entry: resolve(root, 'src/preload/index.ts'), formats: ['cjs'] },
      rolldownOptions: { output: { entryFileNames: '[name].cjs' } },
    },
  },
  renderer: {
    root: 'src/renderer',
    plugins: [vue(), devContentSecurityPolicy()],
    build: {
      outDir: 'out/renderer',
      rolldownOptions: { input: resolve(root, 'src/renderer/index.html') },
    },
  },
});
