import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { applyLora, loraVariables } from '../../src/engine/lora';
import { batchLoss, loadModel, type Batch } from '../../src/engine/models';
import { chunkedGroupedAttention } from '../../src/engine/models/attention';
import { GradientCheckpointing } from '../../src/engine/models/checkpointing';
import type { ForwardContext } from '../../src/engine/models/linear';
import { buildAttentionMask, type CausalLM, type ForwardOptions } from '../../src/engine/models/transformer';
import { quantizeModel } from '../../src/engine/quant/model';
import type { LoraSettings } from '../../src/shared/train-config';
import { FIXTURES, maxAbsDiff, modelDir, readJson, type FixtureModel } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

const LORA: LoraSettings = {
  r: 4,
  loraAlpha: 8,
  loraDropout: 0,
  targetModules: 'all-linear',
  useRslora: false,
  initLoraWeights: 'kaiming',
};

function fixtureBatch(): Batch {
  const raw = readJson(path.join(FIXTURES, 'inputs', 'ids_masked.json'));
  return { inputIds: raw.input_ids, labels: raw.labels, attentionMask: raw.attention_mask };
}

/** A fixture model with LoRA on every linear layer and a random non-zero lora_B, so lora_A gets gradients. */
function adaptedModel(name: FixtureModel, dropout: number, quantized = false): CausalLM {
  const { model } = loadModel(modelDir(name));
  if (quantized) quantizeModel(model, { quantType: 'nf4', blocksize: 64, doubleQuant: true });
  const layers = applyLora(model, { ...LORA, loraDropout: dropout }, 9);
  layers.forEach((layer, i) => {
    const values = tf.randomNormal(layer.lora!.loraB.shape, 0, 0.1, 'float32', 200 + i);
    layer.lora!.loraB.assign(values as tf.Tensor2D);
    values.dispose();
  });
  return model;
}

function countingContext(): ForwardContext {
  let call = 0;
  return { training: true, nextSeed: () => 1000 + call++ };
}

interface Gradients {
  loss: number;
  grads: Map<string, Float32Array>;
}

function lossAndGradients(model: CausalLM, batch: Batch, options: ForwardOptions): Gradients {
  const { value, grads } = tf.variableGrads(() => batchLoss(model, batch, options), loraVariables(model));
  const result: Gradients = { loss: value.dataSync()[0], grads: new Map() };
  for (const [name, grad] of Object.entries(grads)) result.grads.set(name, grad.dataSync() as Float32Array);
  tf.dispose([value, ...Object.values(grads)]);
  return result;
}

function checkpointedGradients(model: CausalLM, batch: Batch, parent: ForwardContext): Gradients {
  const checkpointing = new GradientCheckpointing(parent);
  try {
    return lossAndGradients(model, batch, { context: checkpointing.context, recomputeBlock: checkpointing.recomputeBlock });
  } finally {
    checkpointing.dispose();
  }
}

function expectSameGradients(actual: Gradients, expected: Gradients, model: CausalLM): void {
  expect(Math.abs(actual.loss - expected.loss)).toBeLessThanOrEqual(1e-6);
  const variables = loraVariables(model);
  expect(actual.grads.size).toBe(variables.length);
  for (const variable of variables) {
    const a = actual.grads.get(variable.name)!;
    const b = expected.grads.get(variable.name)!;
    expect(a, variable.name).toBeDefined();
    expect(maxAbsDiff(a, b), variable.name).toBeLessThanOrEqual(1e-6);
  }
}

describe.each(['llama-gqa-untied', 'gpt2-tiny', 'qwen2-tiny'] as const)('%s checkpointing', (name) => {
  for (const dropout of [0, 0.1]) {
    it(`loss and LoRA gradients are unchanged (dropout ${dropout})`, () => {
      const model = adaptedModel(name, dropout);
      const batch = fixtureBatch();
      const expected = lossAndGradients(model, batch, { context: countingContext() });
      const actual = checkpointedGradients(model, batch, countingContext());
      expectSameGradients(actual, expected, model);
      // lora_A of the first layer gets a real gradient (lora_B is non-zero).
      const first = loraVariables(model)[0];
      expect(Math.max(...Array.from(actual.grads.get(first.name)!, Math.abs))).toBeGreaterThan(1e-6);
      model.dispose();
    });
  }
});

describe('checkpointing', () => {
  it('quantized model gives the same gradients', () => {
    const model = adaptedModel('llama-gqa-untied', 0.1, true);
    const batch = fixtureBatch();
    const expected = lossAndGradients(model, batch, { context: countingContext() });
    const actual = checkpointedGradients(model, batch, countingContext());
    expectSameGradients(actual, expected, model);
    model.dispose();
  });

  it('recomputation without seed replay changes the gradients', () => {
    // The same blocks recomputed with the parent context draw new dropout seeds in the backward
    // pass, so the masks differ: the replay is what makes the gradients equal.
    const model = adaptedModel('llama-gqa-untied', 0.1);
    const batch = fixtureBatch();
    const expected = lossAndGradients(model, batch, { context: countingContext() });
    const parent = countingContext();
    const checkpointing = new GradientCheckpointing(parent);
    const actual = lossAndGradients(model, batch, { context: parent, recomputeBlock: checkpointing.recomputeBlock });
    checkpointing.dispose();
    expect(Math.abs(actual.loss - expected.loss)).toBeLessThanOrEqual(1e-6);
    const differences = loraVariables(model).map((variable) => maxAbsDiff(actual.grads.get(variable.name)!, expected.grads.get(variable.name)!));
    expect(Math.max(...differences)).toBeGreaterThan(1e-4);
    model.dispose();
  });

  it('forward pass keeps fewer activation bytes', () => {
    const model = adaptedModel('llama-gqa-untied', 0.1);
    const ids: number[][] = readJson(path.join(FIXTURES, 'inputs', 'train_fixed.json')).input_ids;
    const batch: Batch = { inputIds: ids, labels: ids };
    // Bytes alive at the end of the forward pass: intermediates still in scope plus tensors the tape saved.
    const activationBytes = (checkpointing: GradientCheckpointing | null): number => {
      const base = tf.memory().numBytes;
      let alive = 0;
      const options: ForwardOptions = checkpointing ? { context: checkpointing.context, recomputeBlock: checkpointing.recomputeBlock } : { context: countingContext() };
      const { value, grads } = tf.variableGrads(() => {
        const loss = batchLoss(model, batch, options);
        alive = tf.memory().numBytes - base;
        return loss;
      }, loraVariables(model));
      tf.dispose([value, ...Object.values(grads)]);
      checkpointing?.dispose();
      return alive;
    };
    const plain = activationBytes(null);
    const checkpointed = activationBytes(new GradientCheckpointing(countingContext()));
    expect(checkpointed).toBeLessThan(plain / 2);
    model.dispose();
  });

  it('inference forward is a plain call', () => {
    const model = adaptedModel('gpt2-tiny', 0.1);
    const batch = fixtureBatch();
    const checkpointing = new GradientCheckpointing({ training: false, nextSeed: () => 0 });
    const expected = model.forward(batch.inputIds, { attentionMask: batch.attentionMask });
    const actual = model.forward(batch.inputIds, { attentionMask: batch.attentionMask, context: checkpointing.context, recomputeBlock: checkpointing.recomputeBlock });
    expect(maxAbsDiff(actual.dataSync(), expected.dataSync())).toBe(0);
    expect(checkpointing.keptTensorCount).toBe(0);
    tf.dispose([actual, expected]);
    model.dispose();
  });

  it('tensor count does not grow over repeated steps', () => {
    const model = adaptedModel('llama-gqa-untied', 0.1, true);
    const batch = fixtureBatch();
    const parent = countingContext();
    checkpointedGradients(model, batch, parent);
    const count = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) checkpointedGradients(model, batch, parent);
    expect(tf.memory().numTensors).toBe(count);
    model.dispose();
  });

  it('block with chunked attention recomputes', () => {
    // Attention over [batch 2, 4 heads, 2 key/value heads, seq 6, headDim 4] with the mask created
    // in the forward pass and read only through the chunked attention's slices.
    const [batch, seq, heads, kvHeads, headDim] = [2, 6, 4, 2, 4];
    const hidden = heads * headDim;
    const projections = [hidden, kvHeads * headDim, kvHeads * headDim].map((out, i) =>
      tf.variable(tf.randomNormal([hidden, out], 0, 0.3, 'float32', 300 + i), true, `checkpointing_attention_${i}`),
    );
    const x = tf.randomNormal([batch * seq, hidden], 0, 1, 'float32', 310) as tf.Tensor2D;
    const toHeads = (t: tf.Tensor, count: number) => tf.transpose(tf.reshape(t, [batch, seq, count, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
    const checkpointing = new GradientCheckpointing({ training: true, nextSeed: () => 0 });
    const loss = (recompute: boolean) =>
      tf.variableGrads(() => {
        const mask = buildAttentionMask(batch, seq, 0, [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]);
        const block = (h: tf.Tensor2D) => {
          const [q, k, v] = projections.map((w) => tf.matMul(h, w));
          const attended = chunkedGroupedAttention(toHeads(q, heads), toHeads(k, kvHeads), toHeads(v, kvHeads), mask, kvHeads, 4);
          return tf.add(h, tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [batch * seq, hidden])) as tf.Tensor2D;
        };
        const out = recompute ? checkpointing.recomputeBlock(block, x) : block(x);
        return tf.sum(tf.square(out)) as tf.Scalar;
      }, projections);
    const expected = loss(false);
    const actual = loss(true);
    expect(checkpointing.keptTensorCount).toBe(1);
    expect(Math.abs(actual.value.dataSync()[0] - expected.value.dataSync()[0])).toBeLessThanOrEqual(1e-4);
    for (const w of projections) {
      expect(maxAbsDiff(actual.grads[w.name].dataSync(), expected.grads[w.name].dataSync()), w.name).toBeLessThanOrEqual(1e-5);
    }
    tf.dispose([expected.value, actual.value, ...Object.values(expected.grads), ...Object.values(actual.grads), x, ...projections]);
    checkpointing.dispose();
  });

  it('captured tensors live until dispose', () => {
    const weight = tf.variable(tf.tensor2d([[0.5, -1], [2, 0.25]]), true, 'checkpointing_test_weight');
    const x = tf.tensor2d([[1, 2], [3, -4]]);
    const before = tf.memory().numTensors;
    const checkpointing = new GradientCheckpointing({ training: true, nextSeed: () => 0 });
    const loss = (recompute: boolean) =>
      tf.variableGrads(() => {
        const offset = tf.tensor1d([0.1, -0.2]); // created in the forward tidy, read inside the block
        const block = (h: tf.Tensor2D) => tf.tanh(tf.add(tf.matMul(h, weight), offset)) as tf.Tensor2D;
        const out = recompute ? checkpointing.recomputeBlock(block, x) : block(x);
        return tf.sum(tf.square(out)) as tf.Scalar;
      }, [weight]);
    const expected = loss(false);
    const actual = loss(true);
    expect(checkpointing.keptTensorCount).toBe(1);
    expect(actual.value.dataSync()[0]).toBeCloseTo(expected.value.dataSync()[0], 6);
    expect(maxAbsDiff(actual.grads[weight.name].dataSync(), expected.grads[weight.name].dataSync())).toBeLessThanOrEqual(1e-6);
    tf.dispose([expected.value, actual.value, expected.grads[weight.name], actual.grads[weight.name]]);
    checkpointing.dispose();
    expect(checkpointing.keptTensorCount).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
    weight.dispose();
    x.dispose();
  });
});
