import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { NormalizedRecord } from '../../../src/engine/data/normalize';
import { loadTokenizer } from '../../../src/engine/tokenizer';
import type { Tokenizer } from '../../../src/engine/tokenizer';
import { importDataset, readNormalized } from '../../../src/services/datasets';
import type { ImportedDataset } from '../../../src/services/datasets';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const datasetsDir = path.resolve(repoRoot, '..', 'shared', 'datasets');
const gpt2Dir = path.resolve(repoRoot, '..', 'shared', 'fixtures', 'tokenizers', 'gpt2');

let appDataDir: string;
let gpt2: Tokenizer;

beforeAll(async () => {
  appDataDir = mkdtempSync(path.join(tmpdir(), 'datasets-real-'));
  gpt2 = await loadTokenizer(gpt2Dir);
});
afterAll(() => rmSync(appDataDir, { recursive: true, force: true }));

async function readAll(storedPath: string): Promise<NormalizedRecord[]> {
  const records: NormalizedRecord[] = [];
  for await (const record of readNormalized(storedPath)) records.push(record);
  return records;
}

function expectStoredFiles(dataset: ImportedDataset): void {
  const bytes = readFileSync(dataset.storedPath);
  expect(createHash('sha256').update(bytes).digest('hex')).toBe(dataset.sha256);
  expect(path.basename(dataset.storedPath)).toBe('data.jsonl');
  expect(path.dirname(dataset.storedPath)).toBe(path.join(appDataDir, 'datasets', dataset.id));
  const report = JSON.parse(readFileSync(path.join(path.dirname(dataset.storedPath), 'report.json'), 'utf8'));
  expect(report).toEqual(dataset.report);
  expect(existsSync(`${dataset.storedPath}.partial`)).toBe(false);
}

describe('alpaca json array', () => {
  let dataset: ImportedDataset;
  let records: NormalizedRecord[];
  const source = path.join(datasetsDir, 'alpaca_en_demo.json');

  beforeAll(async () => {
    dataset = await importDataset(source, { appDataDir });
    records = await readAll(dataset.storedPath);
  });

  it('detects format and schema', () => {
    expect(dataset.format).toBe('json');
    expect(dataset.schema).toBe('alpaca');
    expect(dataset.name).toBe('alpaca_en_demo');
    expect(dataset.sourcePath).toBe(source);
  });

  it('keeps all 999 rows', () => {
    expect(dataset.rowsRead).toBe(999);
    expect(dataset.rowsKept).toBe(999);
    expect(dataset.rowsSkipped).toBe(0);
    expect(records).toHaveLength(999);
  });

  it('stores hashed data and report', () => {
    expectStoredFiles(dataset);
  });

  it('uses the input template for 412 rows', () => {
    const source = JSON.parse(readFileSync(path.join(datasetsDir, 'alpaca_en_demo.json'), 'utf8')) as {
      instruction: string;
      input: string;
      output: string;
    }[];
    const withInput = records.filter((r) => r.kind === 'prompt_completion' && r.prompt.includes('### Input:\n'));
    expect(withInput).toHaveLength(412);

    // The streaming reader gives the same rows, in order, as parsing the whole file.
    records.forEach((record, i) => {
      expect(record.kind).toBe('prompt_completion');
      if (record.kind !== 'prompt_completion') return;
      expect(record.completion).toBe(source[i].output);
      expect(record.prompt).toContain(`### Instruction:\n${source[i].instruction}\n\n`);
      expect(record.prompt.endsWith('### Response:\n')).toBe(true);
    });
  });

  it('first prompt is the no-input template', () => {
    expect(records[0]).toEqual({
      kind: 'prompt_completion',
      prompt:
        'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
        '### Instruction:\nDescribe a process of making crepes.\n\n### Response:\n',
      completion: expect.stringMatching(/^Making crepes is an easy and delicious process!/),
    });
  });
});

describe('openai chat jsonl', () => {
  let dataset: ImportedDataset;
  let records: NormalizedRecord[];

  beforeAll(async () => {
    dataset = await importDataset(path.join(datasetsDir, 'openai_chat_drone_training.jsonl'), {
      appDataDir,
      tokenizer: gpt2,
      maxSeqLength: 1024,
    });
    records = await readAll(dataset.storedPath);
  });

  it('detects messages schema', () => {
    expect(dataset.format).toBe('jsonl');
    expect(dataset.schema).toBe('messages');
  });

  it('keeps all 103 rows', () => {
    expect(dataset.rowsRead).toBe(103);
    expect(dataset.rowsKept).toBe(103);
    expect(dataset.rowsSkipped).toBe(0);
    expect(records).toHaveLength(103);
    expectStoredFiles(dataset);
  });

  it('serializes tool calls as assistant content', () => {
    const first = records[0];
    expect(first.kind).toBe('chat');
    if (first.kind !== 'chat') return;
    expect(first.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    expect(first.messages[2].content).toBe('<tool_call>\n{"name":"takeoff_drone","arguments":{"altitude":100}}\n</tool_call>');
  });

  it('measures lengths in tokens', () => {
    expect(dataset.report.lengths.unit).toBe('tokens');
    expect(dataset.report.lengths.count).toBe(103);
    expect(dataset.report.lengths.min).toBeGreaterThan(0);
    expect(dataset.report.lengths.max).toBeLessThan(1024);
    expect(dataset.report.truncated).toBe(0);
    expect(dataset.report.lengths.bins.reduce((sum, bin) => sum + bin.count, 0)).toBe(103);
  });
});

describe('prompt completion jsonl', () => {
  it('keeps all 1817 rows', async () => {
    const dataset = await importDataset(path.join(datasetsDir, 'prompt_completion_text2json_train.jsonl'), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.format).toBe('jsonl');
    expect(dataset.schema).toBe('prompt_completion');
    expect(dataset.rowsRead).toBe(1817);
    expect(dataset.rowsKept).toBe(1817);
    expect(records).toHaveLength(1817);
    expect(records[0].kind).toBe('prompt_completion');
    expect(dataset.report.lengths.unit).toBe('characters');
    expect(dataset.report.notes[0]).toMatch(/characters because no tokenizer/);
    expectStoredFiles(dataset);
  });
});

describe('zstd parquet', () => {
  it('keeps all 48 rows', async () => {
    const dataset = await importDataset(path.join(datasetsDir, 'shellmaster_prompt_response_zstd.parquet'), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.format).toBe('parquet');
    expect(dataset.schema).toBe('prompt_completion');
    expect(dataset.rowsRead).toBe(48);
    expect(dataset.rowsKept).toBe(48);
    expect(records).toHaveLength(48);
    expect(records[0]).toEqual({
      kind: 'prompt_completion',
      prompt: 'You are the ShellMaster. High-speed terminal router. Category: network_discovery.\n\nnmap -sP 192.168.1.0/24',
      completion: 'ShellMaster Unix: nmap -sP 192.168.1.0/24',
    });
    expectStoredFiles(dataset);
  });
});

describe('c4 text jsonl', () => {
  it('keeps 300 rows and the longest line', async () => {
    const source = path.join(datasetsDir, 'c4_demo_text.jsonl');
    const lines = readFileSync(source, 'utf8').split('\n').filter((line) => line !== '');
    const longestLine = Math.max(...lines.map((line) => Buffer.byteLength(line)));
    const longestText = Math.max(...lines.map((line) => (JSON.parse(line) as { text: string }).text.length));

    const dataset = await importDataset(source, { appDataDir, tokenizer: gpt2, maxSeqLength: 1024 });
    const records = await readAll(dataset.storedPath);

    expect(longestLine).toBe(37_665);
    expect(dataset.schema).toBe('text');
    expect(dataset.rowsKept).toBe(300);
    expect(records).toHaveLength(300);
    expect(Math.max(...records.map((r) => (r.kind === 'text' ? r.text.length : 0)))).toBe(longestText);
    expect(dataset.report.lengths.unit).toBe('tokens');
    expect(dataset.report.maxSeqLength).toBe(1024);
    // Some c4 documents are longer than 1024 GPT-2 tokens; each is counted once.
    const longer = records.filter((r) => r.kind === 'text' && gpt2.encode(r.text).length + 1 > 1024).length;
    expect(longer).toBeGreaterThan(0);
    expect(dataset.report.truncated).toBe(longer);
  });
});
