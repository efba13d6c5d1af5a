// Shared esbuild settings for everything that runs tfjs in Node: the CLI, worker and web bridge
// (scripts/build-node.mjs), the benchmarks (bench/run.mjs) and the demo resource build
// (scripts/demo/build.mjs).
//
// Why a bundle instead of running the TypeScript through a loader: @tensorflow/tfjs-core's
// CommonJS build (its package "main") registers no gradient functions, and its ES module build
// (its "module" field) cannot be imported by Node directly. Bundling with the "module" field
// gives one tfjs-core instance with every gradient, shared by the wasm and cpu backends.
import { build } from 'esbuild';

// ES module output has no __dirname/require; some bundled CommonJS code (the wasm backend's
// loader) needs them.
const BANNER = [
  "import { createRequire as __createRequire } from 'node:module';",
  "import { fileURLToPath as __fileURLToPath } from 'node:url';",
  "import { dirname as __pathDirname } from 'node:path';",
  'const require = __createRequire(import.meta.url);',
  'const __filename = __fileURLToPath(import.meta.url);',
  'const __dirname = __pathDirname(__filename);',
].join('\n');

/** Packages loaded from node_modules at run time: native modules and optional backends. */
export const NODE_EXTERNALS = ['better-sqlite3', 'electron', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'lora-studio-native-blas', 'playwright-core'];

/** Bundles `options.entryPoints` as ES modules for Node 20; other esbuild options pass through. */
export function bundleForNode(options) {
  return build({
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    mainFields: ['module', 'main'],
    sourcemap: 'linked',
    banner: { js: BANNER },
    external: NODE_EXTERNALS,
    logLevel: 'warning',
    ...options,
  });
}
