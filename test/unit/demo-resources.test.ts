import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CORPUS, DATA_FILES, DATASET, SEED } from '../../scripts/demo/settings';
import { HANDWRITTEN_PARAGRAPHS, generateCorpus } from '../../scripts/demo/corpus';
import { STYLE_CLOSING, STYLE_OPENING, datasetFiles } from '../../scripts/demo/dataset';
import { initialWeights } from '../../scripts/demo/model';
import { byteToUnicode, tokenizerConfig, tokenizerJson, trainBpe } from '../../scripts/demo/tokenizer';
import { PEOPLE } from '../../scripts/demo/world';
import { selectBackend } from '../../src/engine/backend';
import { CausalLM, batchLoss, loadModel, type LoadedModel } from '../../src/engine/models';
import { parseModelConfig } from '../../src/engine/models/config';
import { createTokenizer, loadTokenizer, type Tokenizer } from '../../src/engine/tokenizer';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const modelDir = path.join(repoRoot, 'resources', 'demo-model');
const dataDir = path.join(repoRoot, 'resources', 'demo-data');

let loaded: LoadedModel;
let tokenizer: Tokenizer;

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
  loaded = loadModel(modelDir);
  tokenizer = await loadTokenizer(modelDir);
});

afterAll(() => loaded?.model.dispose());

/**
 * Stories the corpus generator writes with a seed the pretraining corpus did not use, packed
 * with `<|endoftext|>` into one sequence of at most 128 tokens.
 */
function unseenStoryIds(): number[] {
  const corpus = generateCorpus({ seed: SEED + 1, targetCharacters: 30_000, chatCount: 0 });
  const stories = corpus.documents.slice(HANDWRITTEN_PARAGRAPHS.length + PEOPLE.length);
  const endOfText = tokenizer.tokenToId('<|endoftext|>')!;
  const ids = stories.slice(0, 4).flatMap((story) => [...tokenizer.encode(story), endOfText]);
  return ids.slice(0, 128);
}

function meanLoss(model: CausalLM, ids: number[]): number {
  const loss = tf.tidy(() => batchLoss(model, { inputIds: [ids], labels: [ids] }));
  const value = loss.dataSync()[0];
  loss.dispose();
  return value;
}

describe('demo model', () => {
  it('config is a small Llama with GQA', () => {
    const { config } = loaded;
    expect(config.architecture).toBe('LlamaForCausalLM');
    expect(config.family).toBe('llama');
    expect(config.numHeads).toBe(4);
    expect(config.numKeyValueHeads).toBe(2);
    expect(config.hiddenSize).toBe(128);
    expect(config.numLayers).toBe(4);
    expect(config.tieWordEmbeddings).toBe(true);
    expect(config.torchDtype).toBe('float16');
  });

  it('vocabulary matches the tokenizer', () => {
    expect(loaded.config.vocabSize).toBe(tokenizer.vocabSize);
    expect(tokenizer.vocabSize).toBeGreaterThanOrEqual(1000);
    expect(tokenizer.vocabSize).toBeLessThanOrEqual(2000);
  });

  it('has about a million parameters', () => {
    const count = loaded.model.parameterCount();
    expect(count).toBeGreaterThan(800_000);
    expect(count).toBeLessThan(1_200_000);
  });

  it('config and generation config stop at both end tokens', () => {
    const endTokens = [tokenizer.tokenToId('<|endoftext|>'), tokenizer.tokenToId('<|im_end|>')];
    expect(loaded.config.eosTokenId).toEqual(endTokens);
    expect(loaded.generationConfig?.eos_token_id).toEqual(endTokens);
  });

  it('unseen story loss is far below ln(vocab)', () => {
    const ids = unseenStoryIds();
    expect(ids).toHaveLength(128);
    const chance = Math.log(loaded.config.vocabSize);
    const loss = meanLoss(loaded.model, ids);
    expect(loss).toBeLessThan(chance / 4);
  });

  it('random weights give a loss near ln(vocab)', () => {
    // The same architecture before pretraining: shows the low loss above comes from training.
    const raw = JSON.parse(readFileSync(path.join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const untrained = new CausalLM(parseModelConfig(raw, 'config.json'), initialWeights(raw, 7));
    const chance = Math.log(loaded.config.vocabSize);
    const loss = meanLoss(untrained, unseenStoryIds());
    untrained.dispose();
    expect(Math.abs(loss - chance)).toBeLessThan(0.5);
  });
});

describe('demo tokenizer', () => {
  it('round trips a sentence', () => {
    const text = 'Mira walked from the old mill to the harbor, and found 3 coins!\nÜber café — ok?';
    const ids = tokenizer.encode(text);
    expect(tokenizer.decode(ids)).toBe(text);
  });

  it('merges frequent words into one token', () => {
    expect(tokenizer.encode(' valley', { addSpecialTokens: false })).toHaveLength(1);
    expect(tokenizer.encode(' Mira', { addSpecialTokens: false })).toHaveLength(1);
  });

  it('special tokens have ids 0 to 2', () => {
    expect(tokenizer.tokenToId('<|endoftext|>')).toBe(0);
    expect(tokenizer.tokenToId('<|im_start|>')).toBe(1);
    expect(tokenizer.tokenToId('<|im_end|>')).toBe(2);
    expect(tokenizer.eosTokenId).toBe(0);
    expect(tokenizer.padTokenId).toBe(0);
  });

  it('adds no BOS', () => {
    expect(tokenizer.prefixTokenIds).toEqual([]);
    expect(tokenizer.suffixTokenIds).toEqual([]);
  });

  it('chat template renders ChatML', () => {
    const messages = [
      { role: 'user', content: 'Where does Ada live?' },
      { role: 'assistant', content: 'Ada lives in the stone cottage.' },
    ];
    expect(tokenizer.applyChatTemplate(messages)).toBe('<|im_start|>user\nWhere does Ada live?<|im_end|>\n<|im_start|>assistant\nAda lives in the stone cottage.<|im_end|>\n');
    expect(tokenizer.applyChatTemplate(messages.slice(0, 1), { addGenerationPrompt: true })).toBe('<|im_start|>user\nWhere does Ada live?<|im_end|>\n<|im_start|>assistant\n');
  });

  it('chat markers encode as single tokens', () => {
    const ids = tokenizer.encode('<|im_start|>user\nHi<|im_end|>\n', { addSpecialTokens: false });
    expect(ids[0]).toBe(1);
    expect(ids).toContain(2);
  });
});

describe('demo dataset', () => {
  const read = (name: string) => readFileSync(path.join(dataDir, name), 'utf8');
  const chatRows = () =>
    read(DATA_FILES.chat)
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { messages: { role: string; content: string }[] });

  it('chat file has the expected rows', () => {
    const rows = chatRows();
    expect(rows).toHaveLength(DATASET.chatRows);
    expect(DATASET.chatRows).toBe(320);
    for (const row of rows) {
      expect(row.messages.map((m) => m.role)).toEqual(['user', 'assistant']);
      expect(row.messages[1].content.startsWith(STYLE_OPENING)).toBe(true);
      expect(row.messages[1].content.endsWith(STYLE_CLOSING)).toBe(true);
    }
  });

  it('chat rows are distinct', () => {
    const questions = new Set(chatRows().map((row) => row.messages[0].content));
    expect(questions.size).toBe(DATASET.chatRows);
  });

  it('prompt completion file has the expected rows', () => {
    const rows = read(DATA_FILES.promptCompletion)
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { prompt: string; completion: string });
    expect(rows).toHaveLength(DATASET.promptCompletionRows);
    for (const row of rows) {
      expect(row.prompt.startsWith('Question: ')).toBe(true);
      expect(row.completion.endsWith(STYLE_CLOSING)).toBe(true);
    }
  });

  it('sample prompts are held out', () => {
    const samples = JSON.parse(read(DATA_FILES.samplePrompts)) as unknown[];
    expect(samples).toHaveLength(DATASET.heldOutPrompts);
    const trained = new Set(chatRows().map((row) => row.messages[0].content));
    for (const prompt of samples) {
      expect(typeof prompt).toBe('string');
      expect(trained.has(prompt as string)).toBe(false);
    }
  });

  it('files match the generator', () => {
    for (const [name, text] of Object.entries(datasetFiles())) expect(read(name)).toBe(text);
  });

  it('answers state facts of the world table', () => {
    const mira = PEOPLE.find((p) => p.name === 'Mira')!;
    const rows = chatRows().filter((row) => row.messages[1].content.startsWith(`${STYLE_OPENING}Mira!`));
    expect(rows.length).toBeGreaterThan(0);
    const facts = [mira.home, mira.job, mira.carries, mira.color, mira.pet, mira.friend];
    for (const row of rows) expect(facts.some((fact) => row.messages[1].content.includes(fact))).toBe(true);
  });
});

it('corpus is deterministic for a seed', () => {
  const options = { ...CORPUS, targetCharacters: 5_000, chatCount: 5 };
  expect(generateCorpus(options)).toEqual(generateCorpus(options));
  expect(generateCorpus({ ...options, seed: options.seed + 1 }).documents).not.toEqual(generateCorpus(options).documents);
});

describe('bpe trainer', () => {
  const texts = ['the cat sat on the mat. the cat ran.', 'a cat and a hat, the end.', '<|im_start|>user\nthe cat<|im_end|>\n'];
  const specialTokens = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];

  it('byte table maps 256 bytes to distinct characters', () => {
    const table = byteToUnicode();
    expect(new Set(table).size).toBe(256);
    expect(table[0x20]).toBe('\u0120');
    expect(table[0x41]).toBe('A');
  });

  it('learns the most frequent pair first', () => {
    const bpe = trainBpe(texts, { vocabSize: 262, specialTokens });
    expect(bpe.merges[0]).toEqual(['a', 't']);
    expect(bpe.merges).toHaveLength(3);
    expect(bpe.vocab.get('<|im_end|>')).toBe(2);
    expect(bpe.vocab.get('a')).toBe(3 + 0x61);
    expect(bpe.vocab.get('at')).toBe(259);
    expect(bpe.vocab.size).toBe(262);
  });

  it('stops when no pair repeats', () => {
    const bpe = trainBpe(['abc'], { vocabSize: 2000, specialTokens });
    expect(bpe.merges).toEqual([]);
    expect(bpe.vocab.size).toBe(259);
  });

  it('written files load and round trip', () => {
    const bpe = trainBpe(texts, { vocabSize: 290, specialTokens });
    const roles = { bos: '<|endoftext|>', eos: '<|endoftext|>', pad: '<|endoftext|>' };
    const built = createTokenizer({ tokenizerJson: tokenizerJson(bpe), tokenizerConfig: tokenizerConfig(bpe, roles, 256) });
    for (const text of [...texts, 'unseen words: zebra 42 ü']) expect(built.decode(built.encode(text))).toBe(text);
    expect(built.encode(' the cat', { addSpecialTokens: false }).length).toBeLessThan(' the cat'.length);
    expect(built.encode('<|im_end|>', { addSpecialTokens: false })).toEqual([2]);
  });
});
