/** Resolved by bench/run.mjs to src/engine/quant/model.ts, or to `undefined` before that module exists. */
declare module 'bench:quant' {
  import type { CausalLM } from '../src/engine/models';
  import type { QuantSettings } from '../src/shared/train-config';
  export const quantizeModel: ((model: CausalLM, settings: QuantSettings) => unknown) | undefined;
}
