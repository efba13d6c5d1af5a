import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { detectFormat } from '../../../src/engine/data/formats';
import type { NormalizedRecord } from '../../../src/engine/data/normalize';
import { firstInvalidUtf8Offset, readRows } from '../../../src/engine/data/readers';
import { importDataset, readNormalized } from '../../../src/services/datasets';
import { StudioError } from '../../../src/shared/errors';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const parquetSource = path.resolve(repoRoot, '..', 'shared', 'datasets', 'shellmaster_prompt_response_zstd.parquet');

let workDir: string;
let appDataDir: string;

beforeEach(() => {
  workDir = mkdtempSync(path.join(tmpdir(), 'datasets-bad-'));
  appDataDir = path.join(workDir, 'app');
});
afterEach(() => rmSync(workDir, { recursive: true, force: true }));

function writeSource(name: string, content: string | Buffer): string {
  const file = path.join(workDir, name);
  writeFileSync(file, content);
  return file;
}

function textLines(count: number): string[] {
  return Array.from({ length: count }, (_, i) => JSON.stringify({ text: `row ${i + 1}` }));
}

async function readAll(storedPath: string): Promise<NormalizedRecord[]> {
  const records: NormalizedRecord[] = [];
  for await (const record of readNormalized(storedPath)) records.push(record);
  return records;
}

async function importError(file: string, options: Partial<Parameters<typeof importDataset>[1]> = {}): Promise<StudioError> {
  const error = await importDataset(file, { appDataDir, ...options }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(StudioError);
  return error as StudioError;
}

function storedDatasetFolders(): string[] {
  try {
    return readdirSync(path.join(appDataDir, 'datasets'));
  } catch {
    return [];
  }
}

describe('whole-file failures', () => {
  it('empty file is DATASET_EMPTY', async () => {
    const file = writeSource('empty.jsonl', '');
    const error = await importError(file);

    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toContain('empty.jsonl');
    expect(error.hint).toBeTruthy();
    expect(storedDatasetFolders()).toEqual([]);
  });

  it('blank lines only is DATASET_EMPTY', async () => {
    const error = await importError(writeSource('blank.jsonl', '\n\n  \n'));

    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toContain('blank.jsonl');
  });

  it('truncated parquet is DATASET_PARSE', async () => {
    const file = path.join(workDir, 'cut.parquet');
    copyFileSync(parquetSource, file);
    truncateSync(file, Math.floor(statSync(file).size / 2));

    const error = await importError(file);

    expect(error.code).toBe('DATASET_PARSE');
    expect(error.message).toContain('cut.parquet');
    expect(error.hint).toMatch(/truncated/);
    expect(storedDatasetFolders()).toEqual([]);
  });

  it('parquet extension without magic is DATASET_PARSE', async () => {
    const error = await importError(writeSource('fake.parquet', 'a,b\n1,2\n'));

    expect(error.code).toBe('DATASET_PARSE');
    expect(error.message).toContain('PAR1');
  });

  it('unknown binary format is DATASET_PARSE', async () => {
    const error = await importError(writeSource('data.bin', Buffer.from([0x00, 0x01, 0x02, 0xff, 0x00])));

    expect(error.code).toBe('DATASET_PARSE');
    expect(error.message).toContain('data.bin');
    expect(error.hint).toMatch(/jsonl/);
  });

  it('no known schema lists the columns', async () => {
    const error = await importError(writeSource('odd.jsonl', '{"question": "a", "answer": "b"}\n'));

    expect(error.code).toBe('DATASET_PARSE');
    expect(error.message).toContain('"question"');
    expect(error.message).toContain('"answer"');
    expect(error.hint).toMatch(/prompt_completion/);
  });

  it('no usable rows is DATASET_EMPTY with reasons', async () => {
    const file = writeSource('all-bad.jsonl', '{"text": ""}\n{"text": 5}\n');
    const error = await importError(file);

    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toContain('all-bad.jsonl');
    expect(error.message).toContain('1 empty_text');
    expect(error.message).toContain('1 wrong_type');
    expect(storedDatasetFolders()).toEqual([]);
  });

  it('missing file is NOT_FOUND', async () => {
    const error = await importError(path.join(workDir, 'nope.jsonl'));

    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain('nope.jsonl');
  });
});

describe('encoding and line endings', () => {
  it('UTF-8 BOM imports fine', async () => {
    const file = writeSource('bom.jsonl', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(textLines(3).join('\n'))]));
    const dataset = await importDataset(file, { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.rowsKept).toBe(3);
    expect(dataset.rowsSkipped).toBe(0);
    expect(records[0]).toEqual({ kind: 'text', text: 'row 1' });
  });

  it('UTF-8 BOM in a JSON array', async () => {
    const file = writeSource('bom.json', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('[{"text": "a"}, {"text": "b"}]')]));

    expect(await detectFormat(file)).toBe('json');
    const dataset = await importDataset(file, { appDataDir });
    expect(dataset.rowsKept).toBe(2);
  });

  it('UTF-8 BOM in a CSV header', async () => {
    const file = writeSource('bom.csv', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('prompt,completion\nhi,there\n')]));
    const dataset = await importDataset(file, { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.schema).toBe('prompt_completion');
    expect(records).toEqual([{ kind: 'prompt_completion', prompt: 'hi', completion: 'there' }]);
  });

  it('CRLF line endings import fine', async () => {
    const file = writeSource('crlf.jsonl', textLines(4).join('\r\n') + '\r\n');
    const dataset = await importDataset(file, { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.rowsKept).toBe(4);
    expect(dataset.rowsSkipped).toBe(0);
    expect(records.map((r) => (r.kind === 'text' ? r.text : ''))).toEqual(['row 1', 'row 2', 'row 3', 'row 4']);
  });

  it('invalid UTF-8 line is reported', async () => {
    const lines = textLines(6).map((line) => Buffer.from(line + '\n'));
    lines[3] = Buffer.concat([Buffer.from('{"text": "bad '), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]);
    const dataset = await importDataset(writeSource('utf8.jsonl', Buffer.concat(lines)), { appDataDir });

    expect(dataset.rowsRead).toBe(6);
    expect(dataset.rowsKept).toBe(5);
    expect(dataset.report.skipped).toEqual([
      { row: 4, line: 4, reason: 'invalid_utf8', message: 'line 4 is not valid UTF-8: byte 0xff at byte offset 14 of the line' },
    ]);
    expect(dataset.report.skippedByReason).toEqual({ invalid_utf8: 1 });
  });

  it('invalid UTF-8 in a CSV row', async () => {
    const content = Buffer.concat([Buffer.from('text\nfine\nbro'), Buffer.from([0xc3, 0x28]), Buffer.from('ken\nalso fine\n')]);
    const dataset = await importDataset(writeSource('utf8.csv', content), { appDataDir });

    expect(dataset.rowsKept).toBe(2);
    expect(dataset.report.skipped).toEqual([{ row: 2, reason: 'invalid_utf8', message: 'row 2, column "text" is not valid UTF-8' }]);
  });

  it('UTF-8 validator finds the bad byte', () => {
    expect(firstInvalidUtf8Offset(Buffer.from('héllo 🤖'))).toBe(-1);
    expect(firstInvalidUtf8Offset(Buffer.from([0x61, 0xc0, 0x80]))).toBe(1);
    expect(firstInvalidUtf8Offset(Buffer.from([0x61, 0x62, 0xed, 0xa0, 0x80]))).toBe(2);
    expect(firstInvalidUtf8Offset(Buffer.from([0xe2, 0x82]))).toBe(0);
  });
});

describe('bad rows', () => {
  it('invalid JSON on line 17', async () => {
    const lines = textLines(30);
    lines[16] = '{"text": "unterminated}';
    const dataset = await importDataset(writeSource('broken.jsonl', lines.join('\n')), { appDataDir });
    const records = await readAll(dataset.storedPath);
    const texts = records.map((r) => (r.kind === 'text' ? r.text : ''));

    expect(dataset.rowsRead).toBe(30);
    expect(dataset.rowsKept).toBe(29);
    expect(dataset.rowsSkipped).toBe(1);
    expect(dataset.report.skipped).toHaveLength(1);
    expect(dataset.report.skipped[0].line).toBe(17);
    expect(dataset.report.skipped[0].row).toBe(17);
    expect(dataset.report.skipped[0].reason).toBe('invalid_json');
    expect(dataset.report.skipped[0].message).toMatch(/^line 17 is not valid JSON/);
    expect(texts.slice(0, 16)).toEqual(Array.from({ length: 16 }, (_, i) => `row ${i + 1}`));
    expect(texts.slice(16)).toEqual(Array.from({ length: 13 }, (_, i) => `row ${i + 18}`));
  });

  it('missing field is reported', async () => {
    const lines = [
      '{"prompt": "a", "completion": "b"}',
      '{"prompt": "c", "completion": "d"}',
      '{"prompt": "e"}',
      '{"prompt": "f", "completion": "g"}',
    ];
    const dataset = await importDataset(writeSource('missing.jsonl', lines.join('\n')), { appDataDir });

    expect(dataset.schema).toBe('prompt_completion');
    expect(dataset.rowsKept).toBe(3);
    expect(dataset.report.skipped).toEqual([
      { row: 3, line: 3, reason: 'missing_field', message: 'line 3: missing field "completion"' },
    ]);
  });

  it('mistyped field is reported', async () => {
    const lines = ['{"prompt": "a", "completion": "b"}', '{"prompt": "c", "completion": 42}', '{"prompt": ["x"], "completion": "y"}'];
    const dataset = await importDataset(writeSource('typed.jsonl', lines.join('\n')), { appDataDir });

    expect(dataset.rowsKept).toBe(1);
    expect(dataset.report.skipped).toEqual([
      { row: 2, line: 2, reason: 'wrong_type', message: 'line 2: field "completion" is a number, expected a string' },
      { row: 3, line: 3, reason: 'wrong_type', message: 'line 3: field "prompt" is a list, expected a string' },
    ]);
    expect(dataset.report.skippedByReason).toEqual({ wrong_type: 2 });
  });

  it('empty text is reported', async () => {
    const dataset = await importDataset(writeSource('empty-text.jsonl', '{"text": "a"}\n{"text": "   "}\n'), { appDataDir });

    expect(dataset.report.skipped).toEqual([{ row: 2, line: 2, reason: 'empty_text', message: 'line 2: field "text" is empty' }]);
  });

  it('10 MB line imports', async () => {
    const big = 'x'.repeat(10 * 1024 * 1024);
    const content = [JSON.stringify({ text: 'short' }), JSON.stringify({ text: big }), JSON.stringify({ text: 'after' })].join('\n');
    const dataset = await importDataset(writeSource('big.jsonl', content), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.rowsKept).toBe(3);
    expect(records[1]).toEqual({ kind: 'text', text: big });
    expect(dataset.report.lengths.max).toBe(big.length);
  });

  it('line over the limit is skipped', async () => {
    const big = 'x'.repeat(3 * 1024 * 1024);
    const content = [JSON.stringify({ text: 'short' }), JSON.stringify({ text: big }), JSON.stringify({ text: 'after' })].join('\n');
    const dataset = await importDataset(writeSource('big.jsonl', content), { appDataDir, maxRecordBytes: 1024 * 1024 });
    const records = await readAll(dataset.storedPath);

    expect(dataset.rowsKept).toBe(2);
    expect(records.map((r) => (r.kind === 'text' ? r.text : ''))).toEqual(['short', 'after']);
    expect(dataset.report.skipped).toEqual([
      {
        row: 2,
        line: 2,
        reason: 'too_long',
        message: `line 2 is ${Buffer.byteLength(JSON.stringify({ text: big }))} bytes, over the limit of 1048576 bytes`,
      },
    ]);
  });

  it('ragged CSV rows are skipped', async () => {
    const csv = 'prompt,completion\na,b\nc\nd,e\nf,g,h\n"multi\nline",i\n';
    const dataset = await importDataset(writeSource('ragged.csv', csv), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.format).toBe('csv');
    expect(dataset.rowsRead).toBe(5);
    expect(dataset.rowsKept).toBe(3);
    expect(records).toEqual([
      { kind: 'prompt_completion', prompt: 'a', completion: 'b' },
      { kind: 'prompt_completion', prompt: 'd', completion: 'e' },
      { kind: 'prompt_completion', prompt: 'multi\nline', completion: 'i' },
    ]);
    expect(dataset.report.skipped).toEqual([
      { row: 2, reason: 'ragged_row', message: 'row 2 has 1 fields but the header has 2' },
      { row: 4, reason: 'ragged_row', message: 'row 4 has 3 fields but the header has 2' },
    ]);
  });

  it('truncated JSON array keeps earlier elements', async () => {
    const file = writeSource('cut.json', '[\n  {"text": "a"},\n  {"text": "b"},\n  {"text": "c');
    const dataset = await importDataset(file, { appDataDir });

    expect(dataset.rowsKept).toBe(2);
    expect(dataset.report.skipped).toHaveLength(1);
    expect(dataset.report.skipped[0]).toMatchObject({ row: 3, line: 4, reason: 'invalid_json' });
    expect(dataset.report.skipped[0].message).toContain('truncated');
  });

  it('bad JSON array element is reported', async () => {
    const file = writeSource('elements.json', '[\n{"text": "a"},\n{"text": b},\n{"text": "c, d"}\n]\n');
    const dataset = await importDataset(file, { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(records).toEqual([
      { kind: 'text', text: 'a' },
      { kind: 'text', text: 'c, d' },
    ]);
    expect(dataset.report.skipped).toHaveLength(1);
    expect(dataset.report.skipped[0]).toMatchObject({ row: 2, line: 3, reason: 'invalid_json' });
    expect(dataset.report.skipped[0].message).toMatch(/^element 2 \(line 3\) is not valid JSON/);
  });

  it('skip details are capped', async () => {
    const lines = [JSON.stringify({ text: 'ok' }), ...Array.from({ length: 250 }, () => '{bad')];
    const dataset = await importDataset(writeSource('many.jsonl', lines.join('\n')), { appDataDir });

    expect(dataset.rowsSkipped).toBe(250);
    expect(dataset.report.skippedByReason).toEqual({ invalid_json: 250 });
    expect(dataset.report.skipped).toHaveLength(200);
    expect(dataset.report.skipped[199].line).toBe(201);
  });
});

describe('schemas', () => {
  it('sharegpt roles are mapped', async () => {
    const row = {
      conversations: [
        { from: 'system', value: 'Be nice.' },
        { from: 'human', value: 'Hi' },
        { from: 'gpt', value: 'Hello' },
      ],
    };
    const bad = { conversations: [{ from: 'alien', value: 'x' }] };
    const dataset = await importDataset(writeSource('sharegpt.jsonl', [row, bad].map((r) => JSON.stringify(r)).join('\n')), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.schema).toBe('sharegpt');
    expect(records).toEqual([
      {
        kind: 'chat',
        messages: [
          { role: 'system', content: 'Be nice.' },
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello' },
        ],
      },
    ]);
    expect(dataset.report.skipped[0]).toMatchObject({ row: 2, reason: 'wrong_type' });
    expect(dataset.report.skipped[0].message).toContain('"alien"');
  });

  it('chat without assistant content is skipped', async () => {
    const row = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant' }] };
    const good = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'text', text: 'Yo' }] }] };
    const dataset = await importDataset(writeSource('chat.jsonl', [good, row].map((r) => JSON.stringify(r)).join('\n')), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(records).toEqual([
      {
        kind: 'chat',
        messages: [
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Yo' },
        ],
      },
    ]);
    expect(dataset.report.skipped).toEqual([
      { row: 2, line: 2, reason: 'missing_field', message: 'line 2: messages[1].content is missing, expected a string' },
    ]);
  });

  it('pre-tokenized rows drop padding', async () => {
    const rows = [
      { input_ids: [5, 6, 7, 0], attention_mask: [1, 1, 1, 0], labels: [-100, 6, 7, -100] },
      { input_ids: [1, 2], labels: [1] },
      { input_ids: [1, -2] },
    ];
    const dataset = await importDataset(writeSource('tokens.jsonl', rows.map((r) => JSON.stringify(r)).join('\n')), {
      appDataDir,
      maxSeqLength: 2,
    });
    const records = await readAll(dataset.storedPath);

    expect(dataset.schema).toBe('tokens');
    expect(records).toEqual([{ kind: 'tokens', input_ids: [5, 6, 7], labels: [-100, 6, 7] }]);
    expect(dataset.report.lengths.unit).toBe('tokens');
    expect(dataset.report.truncated).toBe(1);
    expect(dataset.report.skipped.map((s) => s.reason)).toEqual(['wrong_type', 'wrong_type']);
    expect(dataset.report.skipped[0].message).toBe('line 2: field "labels" has 1 values but "input_ids" has 2');
    expect(dataset.report.skipped[1].message).toBe('line 3: input_ids[1] is -2, expected an integer >= 0');
  });

  it('schema override is used', async () => {
    const lines = ['{"text": "t", "prompt": "p", "completion": "c"}'];
    const dataset = await importDataset(writeSource('both.jsonl', lines.join('\n')), { appDataDir, schemaOverride: 'text' });
    const records = await readAll(dataset.storedPath);

    expect(dataset.schema).toBe('text');
    expect(records).toEqual([{ kind: 'text', text: 't' }]);
  });

  it('plain text splits on blank lines', async () => {
    const dataset = await importDataset(writeSource('notes.txt', 'First para\nline two\r\n\r\n\nSecond para\n\nThird\n'), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.format).toBe('text');
    expect(records).toEqual([
      { kind: 'text', text: 'First para\nline two' },
      { kind: 'text', text: 'Second para' },
      { kind: 'text', text: 'Third' },
    ]);
  });

  it('tsv reads tab-separated rows', async () => {
    const dataset = await importDataset(writeSource('pairs.tsv', 'instruction\tinput\toutput\nAdd\t1, 2\t3\n'), { appDataDir });
    const records = await readAll(dataset.storedPath);

    expect(dataset.format).toBe('tsv');
    expect(dataset.schema).toBe('alpaca');
    expect(records[0]).toMatchObject({ kind: 'prompt_completion', completion: '3' });
    expect(records[0]).toHaveProperty('prompt', expect.stringContaining('### Input:\n1, 2\n\n'));
  });
});

describe('readers', () => {
  it('json array rows carry lines', async () => {
    const file = writeSource('lines.json', '[{"text": "a"},\n\n {"text": "b\\n"},\n {"text": "c"}]');
    const rows = [];
    for await (const row of readRows(file, 'json')) rows.push(row);

    expect(rows).toEqual([
      { ok: true, location: { row: 1, line: 1 }, value: { text: 'a' } },
      { ok: true, location: { row: 2, line: 3 }, value: { text: 'b\n' } },
      { ok: true, location: { row: 3, line: 4 }, value: { text: 'c' } },
    ]);
  });

  it('json array reader handles split chunks', async () => {
    // Elements larger than the 64 KiB read chunk cross chunk boundaries, some inside strings.
    const elements = Array.from({ length: 5 }, (_, i) => ({ text: `${i} "q" [x] {y}, ` + 'z'.repeat(40_000 + i) }));
    const file = writeSource('chunks.json', JSON.stringify(elements, null, 1));
    const values = [];
    for await (const row of readRows(file, 'json')) values.push(row.ok ? row.value : row.reason);

    expect(values).toEqual(elements);
  });
});

describe('progress', () => {
  it('reports the whole file at the end', async () => {
    const file = writeSource('progress.jsonl', textLines(50).join('\n'));
    const events: { bytesRead: number; totalBytes: number; rowsRead: number }[] = [];
    await importDataset(file, { appDataDir, onProgress: (event) => events.push(event) });

    const last = events[events.length - 1];
    expect(last.bytesRead).toBe(readFileSync(file).length);
    expect(last.totalBytes).toBe(readFileSync(file).length);
    expect(last.rowsRead).toBe(50);
  });
});
