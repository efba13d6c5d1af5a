import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { batchLoss, loadModel } from '../../src/engine/models';
import { FIXTURE_MODELS, adapterDir, maxAbsDiff, modelDir, readReference } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

describe.each(FIXTURE_MODELS)('%s matches transformers', (name) => {
  for (const withAdapter of [false, true]) {
    for (const input of ['basic', 'masked'] as const) {
      it(`${withAdapter ? 'with adapter, ' : ''}${input} input: logits and loss`, () => {
        const reference = readReference(name, input, withAdapter);
        const { model } = loadModel(modelDir(name));
        if (withAdapter) loadAdapter(model, adapterDir(name));

        const logits = model.forward(reference.input_ids, { attentionMask: reference.attention_mask });
        expect(logits.shape).toEqual(reference.logitsShape);
        const values = logits.dataSync();
        // Padded query positions are excluded: their logits are unspecified (all keys masked).
        const compared = maskedPositions(values, reference.logits, reference.attention_mask, reference.logitsShape);
        expect(maxAbsDiff(compared.actual, compared.expected)).toBeLessThanOrEqual(1e-4);

        const loss = tf.tidy(() => batchLoss(model, { inputIds: reference.input_ids, labels: reference.labels, attentionMask: reference.attention_mask }));
        expect(Math.abs(loss.dataSync()[0] - reference.loss)).toBeLessThanOrEqual(1e-5);
        logits.dispose();
        loss.dispose();
        model.dispose();
      });
    }
  }
});

function maskedPositions(actual: ArrayLike<number>, expected: Float32Array, mask: number[][] | undefined, shape: number[]) {
  const [batch, seq, vocab] = shape;
  const a: number[] = [];
  const e: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      if (mask && mask[b][t] === 0) continue;
      const offset = (b * seq + t) * vocab;
      for (let v = 0; v < vocab; v++) {
        a.push(actual[offset + v]);
        e.push(expected[offset + v]);
      }
    }
  }
  return { actual: a, expected: e };
}

describe('tensor bookkeeping', () => {
  it('forward pass leaves no tensors behind', () => {
    const start = tf.memory().numTensors;
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    model.forward([[1, 2, 3, 4]]).dispose(); // builds the RoPE table kept by the model
    const before = tf.memory().numTensors;
    model.forward([[1, 2, 3, 4]]).dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });
});
