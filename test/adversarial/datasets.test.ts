/**
 * Bad dataset files through the real import: each is rejected with the file, line and reason, or
 * imported with every skipped row named, and nothing is left behind in the app data folder.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeRecord } from '../../src/engine/data/encode';
import type { NormalizedRecord } from '../../src/engine/data/normalize';
import { loadTokenizer, type Tokenizer } from '../../src/engine/tokenizer';
import { importDataset, readNormalized } from '../../src/services/datasets';
import { catchStudioErrorAsync, makeScratch } from '../helpers/adversarial';
import { DATASETS } from '../helpers/fixtures';
import { GPT2_TOKENIZER_DIR, TINY_VOCAB_SIZE } from '../helpers/tiny-model';

const scratch = makeScratch('datasets');
const appDataDir = path.join(scratch, 'app');
let tokenizer: Tokenizer;

beforeAll(async () => {
  tokenizer = await loadTokenizer(GPT2_TOKENIZER_DIR);
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function writeFile(name: string, content: string | Buffer): string {
  const file = path.join(scratch, name);
  fs.writeFileSync(file, content);
  return file;
}

function storedDatasetCount(): number {
  const folder = path.join(appDataDir, 'datasets');
  return fs.existsSync(folder) ? fs.readdirSync(folder).length : 0;
}

async function readAll(storedPath: string): Promise<NormalizedRecord[]> {
  const records: NormalizedRecord[] = [];
  for await (const record of readNormalized(storedPath)) records.push(record);
  return records;
}

/** Bytes that are neither UTF-8 nor JSON, with no NUL in the first 4 KB. */
function binaryGarbage(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = 0x80 + ((i * 7919) % 0x7f);
  return bytes;
}

describe('files rejected with a named cause', () => {
  const shellmaster = () => fs.readFileSync(path.join(DATASETS, 'shellmaster_prompt_response_zstd.parquet'));
  const cases: { name: string; file: () => string; code: string; fragments: string[] }[] = [
    { name: 'binary garbage as .jsonl', file: () => writeFile('garbage.jsonl', binaryGarbage(5000)), code: 'DATASET_EMPTY', fragments: ['garbage.jsonl', 'line 1 is not valid UTF-8'] },
    { name: 'JSON object instead of array', file: () => writeFile('object.json', '{"a": 1, "b": {"text": "x"}}'), code: 'DATASET_PARSE', fragments: ['object.json', '"a", "b"'] },
    { name: 'nested arrays', file: () => writeFile('nested.json', '[[{"text": "a"}], [{"text": "b"}]]'), code: 'DATASET_PARSE', fragments: ['nested.json', 'no object rows'] },
    { name: 'messages as a string', file: () => writeFile('messages-string.jsonl', '{"messages": "hello"}\n'), code: 'DATASET_EMPTY', fragments: ['line 1', 'field "messages" is a string, expected a list'] },
    { name: 'roles that are numbers', file: () => writeFile('role-number.jsonl', '{"messages": [{"role": 1, "content": "hi"}, {"role": 2, "content": "yo"}]}\n'), code: 'DATASET_EMPTY', fragments: ['line 1', 'messages[0].role is a number'] },
    { name: 'no assistant turn', file: () => writeFile('no-assistant.jsonl', '{"messages": [{"role": "user", "content": "hi"}]}\n'), code: 'DATASET_EMPTY', fragments: ['line 1', 'no assistant turn'] },
    { name: 'every completion empty', file: () => writeFile('empty-completion.jsonl', '{"prompt": "p", "completion": ""}\n{"prompt": "q", "completion": ""}\n'), code: 'DATASET_EMPTY', fragments: ['none of the 2 rows', 'field "completion" is empty'] },
    { name: '0-byte Parquet', file: () => writeFile('empty.parquet', ''), code: 'DATASET_EMPTY', fragments: ['empty.parquet', '0 bytes'] },
    { name: 'Parquet magic only', file: () => writeFile('magic.parquet', 'PAR1'), code: 'DATASET_PARSE', fragments: ['magic.parquet', 'not a readable Parquet file'] },
    { name: 'truncated Parquet', file: () => writeFile('truncated.parquet', shellmaster().subarray(0, shellmaster().length - 100)), code: 'DATASET_PARSE', fragments: ['truncated.parquet', 'footer'] },
    { name: 'Parquet footer length of 2 GB', file: () => { const bytes = Buffer.from(shellmaster()); bytes.writeUInt32LE(0x7fffffff, bytes.length - 8); return writeFile('footer.parquet', bytes); }, code: 'DATASET_PARSE', fragments: ['footer.parquet', '2147483647'] },
    { name: 'CSV with only a header', file: () => writeFile('header-only.csv', 'prompt,completion\n'), code: 'DATASET_EMPTY', fragments: ['header-only.csv', 'no rows'] },
    { name: 'ids below zero', file: () => writeFile('negative-ids.jsonl', '{"input_ids": [1, -2, 3]}\n'), code: 'DATASET_EMPTY', fragments: ['line 1', 'input_ids[1] is -2'] },
    { name: 'ids as strings', file: () => writeFile('string-ids.jsonl', '{"input_ids": ["1", "2"]}\n'), code: 'DATASET_EMPTY', fragments: ['line 1', 'input_ids[0] is a string'] },
    { name: 'UTF-16 text', file: () => writeFile('utf16.jsonl', Buffer.from('\ufeff{"text": "hello"}\n', 'utf16le')), code: 'DATASET_EMPTY', fragments: ['utf16.jsonl', 'not valid UTF-8'] },
    { name: 'missing file', file: () => path.join(scratch, 'does-not-exist.jsonl'), code: 'NOT_FOUND', fragments: ['does-not-exist.jsonl'] },
  ];

  for (const testCase of cases) {
    it(`import rejects ${testCase.name}`, async () => {
      const before = storedDatasetCount();
      const error = await catchStudioErrorAsync(() => importDataset(testCase.file(), { appDataDir }));
      expect(error.code).toBe(testCase.code);
      for (const fragment of testCase.fragments) expect(error.message).toContain(fragment);
      expect(storedDatasetCount()).toBe(before);
    });
  }

  it('unknown schema override is INVALID_ARGUMENT', async () => {
    const file = writeFile('override.jsonl', '{"text": "a"}\n');
    const error = await catchStudioErrorAsync(() => importDataset(file, { appDataDir, schemaOverride: 'bogus' as never }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('"bogus"');
  });

  it('ids above the vocabulary are named with a tokenizer', async () => {
    const file = writeFile('ids-above-vocab.jsonl', `{"input_ids": [1, ${TINY_VOCAB_SIZE + 10}, 3]}\n`);
    const error = await catchStudioErrorAsync(() => importDataset(file, { appDataDir, tokenizer }));
    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toContain(`input_ids[1] is ${TINY_VOCAB_SIZE + 10}, outside the model's vocabulary of ${TINY_VOCAB_SIZE} tokens`);
  });

  // The importer checks that the path is a regular file before reading, instead of letting
  // Node's EISDIR error through.
  it('folder instead of file is NOT_FOUND or DATASET_PARSE', async () => {
    const folder = path.join(scratch, 'folder.jsonl');
    fs.mkdirSync(folder);
    const error = await catchStudioErrorAsync(() => importDataset(folder, { appDataDir }));
    expect(['NOT_FOUND', 'DATASET_PARSE']).toContain(error.code);
    expect(error.message).toContain('folder.jsonl');
  });

  // Labels are checked against the vocabulary like input_ids, so the row is skipped at import.
  it('labels above the vocabulary are skipped', async () => {
    const file = writeFile('labels-above-vocab.jsonl', `{"input_ids": [1, 2, 3], "labels": [1, 2, ${TINY_VOCAB_SIZE + 10}]}\n{"input_ids": [1, 2, 3]}\n`);
    const imported = await importDataset(file, { appDataDir, tokenizer });
    expect(imported.rowsSkipped).toBe(1);
    expect(imported.report.skipped[0].message).toContain(String(TINY_VOCAB_SIZE + 10));
  });
});

describe('awkward files imported correctly', () => {
  it('CSV with BOM, CRLF and tabs keeps the cells', async () => {
    const file = writeFile('bom.csv', '\ufeffprompt,completion\r\n"a\tb","c\td"\r\n"x","y"\r\n');
    const imported = await importDataset(file, { appDataDir });
    expect(imported.schema).toBe('prompt_completion');
    expect(imported.rowsKept).toBe(2);
    const records = await readAll(imported.storedPath);
    expect(records[0]).toMatchObject({ kind: 'prompt_completion', prompt: 'a\tb', completion: 'c\td' });
  });

  it('JSONL with BOM and CRLF reads the first row', async () => {
    const file = writeFile('bom.jsonl', '\ufeff{"text": "a"}\r\n{"text": "b"}\r\n');
    const imported = await importDataset(file, { appDataDir });
    expect(imported.rowsKept).toBe(2);
    const records = await readAll(imported.storedPath);
    expect(records[0]).toMatchObject({ kind: 'text', text: 'a' });
  });

  it('20000 columns with a text column import', async () => {
    const columns = Array.from({ length: 20_000 }, (_, i) => `c${i}`);
    const file = writeFile('wide.csv', `${['text', ...columns].join(',')}\n${['hello', ...columns.map(() => 'v')].join(',')}\n`);
    const imported = await importDataset(file, { appDataDir });
    expect(imported.schema).toBe('text');
    expect(imported.rowsKept).toBe(1);
  });

  it('20000 columns without a known one name the first columns', async () => {
    const columns = Array.from({ length: 20_000 }, (_, i) => `c${i}`);
    const file = writeFile('wide-unknown.csv', `${columns.join(',')}\n${columns.map(() => 'v').join(',')}\n`);
    const error = await catchStudioErrorAsync(() => importDataset(file, { appDataDir }));
    expect(error.code).toBe('DATASET_PARSE');
    expect(error.message).toContain('"c0", "c1"');
    expect(error.message.length).toBeLessThan(2000);
  });

  it('row of one million tokens is truncated when encoded', async () => {
    const ids = Array.from({ length: 1_000_000 }, (_, i) => i % 300);
    const file = writeFile('million.jsonl', JSON.stringify({ input_ids: ids }) + '\n');
    const imported = await importDataset(file, { appDataDir });
    expect(imported.report.lengths.max).toBe(1_000_000);
    const [record] = await readAll(imported.storedPath);
    const encoded = encodeRecord(record, undefined, { maxSeqLength: 64 });
    expect(encoded.ok).toBe(true);
    expect(encoded.ok ? encoded.example.input_ids.length : 0).toBe(64);
  });

  it('bad rows among good ones are named by line', async () => {
    const file = writeFile('mixed.jsonl', '{"text": "ok"}\nnot json\n{"text": ""}\n{"text": "fine"}\n');
    const imported = await importDataset(file, { appDataDir });
    expect(imported.rowsKept).toBe(2);
    expect(imported.report.skipped.map((row) => row.line)).toEqual([2, 3]);
    expect(imported.report.skippedByReason).toEqual({ invalid_json: 1, empty_text: 1 });
  });
});
