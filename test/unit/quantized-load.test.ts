import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loadModel } from '../../src/engine/models';
import { quantizationReport, quantizeModel } from '../../src/engine/quant';
import { FIXTURE_MODELS, maxAbsDiff, modelDir, readReference } from '../helpers/fixtures';

const SETTINGS = { quantType: 'nf4', blocksize: 64, doubleQuant: true } as const;

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

describe.each(FIXTURE_MODELS)('%s quantized while loading', (name) => {
  it('equals loading in float32 and quantizing after, without float32 kernels on the backend', () => {
    const reference = readReference(name, 'basic', false);

    const later = loadModel(modelDir(name)).model;
    const laterReport = quantizeModel(later, SETTINGS);
    const expected = later.forward(reference.input_ids);

    const before = tf.memory().numBytes;
    const direct = loadModel(modelDir(name), { quantize: SETTINGS }).model;
    const loadedBytes = tf.memory().numBytes - before;
    const report = quantizationReport(direct, SETTINGS);
    const actual = direct.forward(reference.input_ids);

    expect(report.layers).toEqual(laterReport.layers);
    expect(report.bytes).toBe(laterReport.bytes);
    // No quantized layer has a float32 kernel, and the model's tensors are the float32 rest
    // (embeddings, norms, biases, an untied head) plus the packed weights.
    const quantized = direct.linearLayers().filter((layer) => layer.quantized);
    expect(quantized.length).toBe(report.layers.length);
    expect(quantized.every((layer) => layer.kernel === null)).toBe(true);
    const floatParameters = direct.parameterCount() - report.quantizedParameters;
    expect(loadedBytes).toBe(4 * floatParameters + report.bytes);
    expect(maxAbsDiff(actual.dataSync(), expected.dataSync())).toBe(0);

    tf.dispose([expected, actual]);
    later.dispose();
    direct.dispose();
  });
});
