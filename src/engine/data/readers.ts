/**
 * Streaming readers: each yields a file's records one at a time, so memory stays bounded by the
 * largest record (capped by `maxRecordBytes`), never by the file size.
 *
 * A record that cannot be decoded is yielded as a failure with its location and reason. Only a
 * file that cannot be read at all throws: a Parquet file without a valid footer, or a JSON file
 * that does not start with an array.
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';

import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import type { FileMetaData } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import Papa from 'papaparse';

import { StudioError } from '../../shared/errors';
import type { DatasetFormat } from './formats';
import type { RowLocation, SkipReason } from './report';

export type RawRow =
  | { ok: true; location: RowLocation; value: unknown }
  | { ok: false; location: RowLocation; reason: SkipReason; message: string };

export interface ReaderOptions {
  /** Records (lines, array elements, paragraphs) longer than this are skipped as `too_long`. Default 64 MiB. */
  maxRecordBytes?: number;
  /** Called with the number of bytes read so far (for Parquet, an estimate from the rows read). */
  onProgress?: (done: number) => void;
}

export const DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024;

const READ_CHUNK_BYTES = 1 << 16;
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** Streams the records of `filePath` as read by the reader for `format`. */
export function readRows(filePath: string, format: DatasetFormat, options: ReaderOptions = {}): AsyncGenerator<RawRow> {
  switch (format) {
    case 'jsonl':
      return readJsonLines(filePath, options);
    case 'json':
      return readJsonArray(filePath, options);
    case 'csv':
      return readDelimited(filePath, undefined, options);
    case 'tsv':
      return readDelimited(filePath, '\t', options);
    case 'parquet':
      return readParquet(filePath, options);
    case 'text':
      return readTextParagraphs(filePath, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Lines

/** One line of a file, without its line terminator (LF or CRLF). */
export type Line =
  | { lineNumber: number; text: string }
  | { lineNumber: number; text?: undefined; reason: 'invalid_utf8' | 'too_long'; message: string };

/**
 * Splits a file into lines at the byte level: LF ends a line and a CR before it is dropped, a
 * UTF-8 BOM at the start of the file is dropped, and each line is decoded as strict UTF-8. A line
 * longer than `maxLineBytes` is reported and its bytes discarded as they stream past.
 */
export async function* splitLines(
  filePath: string,
  maxLineBytes: number = DEFAULT_MAX_RECORD_BYTES,
  onProgress?: (bytesRead: number) => void,
): AsyncGenerator<Line> {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  let parts: Buffer[] = [];
  let lineBytes = 0;
  let lineNumber = 1;
  let bytesRead = 0;

  const finishLine = (): Line => {
    const number = lineNumber++;
    const length = lineBytes;
    const bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    parts = [];
    lineBytes = 0;
    if (length > maxLineBytes) {
      return {
        lineNumber: number,
        reason: 'too_long',
        message: `line ${number} is ${length} bytes, over the limit of ${maxLineBytes} bytes`,
      };
    }
    return decodeLine(number, stripLineEnd(bytes, number === 1), decoder);
  };

  for await (const chunk of createReadStream(filePath, { highWaterMark: READ_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    bytesRead += chunk.length;
    let start = 0;
    while (start <= chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      const end = newline === -1 ? chunk.length : newline;
      if (end > start) {
        lineBytes += end - start;
        // Past the limit the bytes are dropped: only the count is kept.
        if (lineBytes <= maxLineBytes) parts.push(chunk.subarray(start, end));
        else parts = [];
      }
      if (newline === -1) break;
      yield finishLine();
      start = newline + 1;
    }
    onProgress?.(bytesRead);
  }
  if (lineBytes > 0) yield finishLine();
}

function stripLineEnd(bytes: Buffer, firstLine: boolean): Buffer {
  let start = 0;
  let end = bytes.length;
  if (firstLine && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3;
  if (end > start && bytes[end - 1] === CARRIAGE_RETURN) end -= 1;
  return bytes.subarray(start, end);
}

function decodeLine(lineNumber: number, bytes: Buffer, decoder: TextDecoder): Line {
  try {
    return { lineNumber, text: decoder.decode(bytes) };
  } catch {
    const offset = firstInvalidUtf8Offset(bytes);
    const byte = offset >= 0 ? bytes[offset].toString(16).padStart(2, '0') : '??';
    return {
      lineNumber,
      reason: 'invalid_utf8',
      message: `line ${lineNumber} is not valid UTF-8: byte 0x${byte} at byte offset ${offset} of the line`,
    };
  }
}

/** Offset of the first byte that breaks UTF-8 (RFC 3629), or -1 when the bytes are valid. */
export function firstInvalidUtf8Offset(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i];
    let continuation: number;
    let lowest: number;
    if (lead < 0x80) {
      i += 1;
      continue;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      continuation = 1;
      lowest = 0x80;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      continuation = 2;
      lowest = 0x800;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      continuation = 3;
      lowest = 0x10000;
    } else {
      return i;
    }
    let codePoint = lead & (0x3f >> continuation);
    for (let k = 1; k <= continuation; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return i;
      codePoint = (codePoint << 6) | (next & 0x3f);
    }
    const surrogate = codePoint >= 0xd800 && codePoint <= 0xdfff;
    if (codePoint < lowest || codePoint > 0x10ffff || surrogate) return i;
    i += continuation + 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// JSON Lines

async function* readJsonLines(filePath: string, options: ReaderOptions): AsyncGenerator<RawRow> {
  const maxBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  for await (const line of splitLines(filePath, maxBytes, options.onProgress)) {
    const location = { row: line.lineNumber, line: line.lineNumber };
    if (line.text === undefined) {
      yield { ok: false, location, reason: line.reason, message: line.message };
      continue;
    }
    if (line.text.trim() === '') continue;
    yield parseJsonRecord(line.text, location, `line ${line.lineNumber}`);
  }
}

function parseJsonRecord(text: string, location: RowLocation, where: string): RawRow {
  try {
    return { ok: true, location, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, location, reason: 'invalid_json', message: `${where} is not valid JSON: ${(error as Error).message}` };
  }
}

// ---------------------------------------------------------------------------------------------
// JSON array

/**
 * Reads a top-level JSON array element by element. A byte-level scanner finds where each element
 * ends (a comma or the closing bracket outside strings and nested brackets) and only that
 * element's bytes are parsed. UTF-8 continuation bytes are all >= 0x80, so they can never be
 * mistaken for the ASCII characters the scanner looks for.
 */
async function* readJsonArray(filePath: string, options: ReaderOptions): AsyncGenerator<RawRow> {
  const maxBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  const name = path.basename(filePath);
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  let state: 'before' | 'element' | 'after' = 'before';
  let line = 1;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let parts: Buffer[] = [];
  let elementBytes = 0;
  let elementStartLine = 0;
  let elementStarted = false;
  let row = 0;
  let bytesRead = 0;
  let fileOffset = 0;
  let trailingContentLine = 0;

  const finishElement = (): RawRow | undefined => {
    const started = elementStarted;
    const bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    const length = elementBytes;
    parts = [];
    elementBytes = 0;
    elementStarted = false;
    if (!started) return undefined;

    row += 1;
    const location = { row, line: elementStartLine };
    const where = `element ${row} (line ${elementStartLine})`;
    if (length > maxBytes) {
      return { ok: false, location, reason: 'too_long', message: `${where} is ${length} bytes, over the limit of ${maxBytes} bytes` };
    }
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      const offset = firstInvalidUtf8Offset(bytes);
      return { ok: false, location, reason: 'invalid_utf8', message: `${where} is not valid UTF-8 at byte offset ${offset} of the element` };
    }
    return parseJsonRecord(text, location, where);
  };

  for await (const chunk of createReadStream(filePath, { highWaterMark: READ_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    bytesRead += chunk.length;
    let segmentStart = 0;
    const pending: RawRow[] = [];

    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      const offset = fileOffset + i;
      if (byte === NEWLINE) line += 1;

      if (state === 'before') {
        if (offset < 3 && byte === [0xef, 0xbb, 0xbf][offset]) continue;
        if (isJsonWhitespace(byte)) continue;
        if (byte !== 0x5b /* [ */) {
          throw new StudioError(
            'DATASET_PARSE',
            `${name}: line ${line} starts with "${String.fromCharCode(byte)}" but a JSON array must start with "[".`,
            'Save the data as a JSON array of objects, or as JSON Lines (.jsonl) with one object per line.',
          );
        }
        state = 'element';
        segmentStart = i + 1;
        continue;
      }

      if (state === 'after') {
        if (!isJsonWhitespace(byte) && trailingContentLine === 0) trailingContentLine = line;
        continue;
      }

      // state === 'element'
      if (inString) {
        if (escaped) escaped = false;
        else if (byte === 0x5c /* \ */) escaped = true;
        else if (byte === 0x22 /* " */) inString = false;
      } else if (byte === 0x22) {
        inString = true;
      } else if (byte === 0x7b /* { */ || byte === 0x5b /* [ */) {
        depth += 1;
      } else if ((byte === 0x7d /* } */ || byte === 0x5d /* ] */) && depth > 0) {
        depth -= 1;
      } else if (depth === 0 && (byte === 0x2c /* , */ || byte === 0x5d /* ] */)) {
        appendSegment(chunk.subarray(segmentStart, i));
        const result = finishElement();
        if (result) pending.push(result);
        segmentStart = i + 1;
        if (byte === 0x5d) state = 'after';
        continue;
      }
      if (!elementStarted && !isJsonWhitespace(byte)) {
        elementStarted = true;
        elementStartLine = line;
      }
    }

    if (state === 'element') appendSegment(chunk.subarray(segmentStart));
    fileOffset += chunk.length;
    options.onProgress?.(bytesRead);
    yield* pending;
  }

  if (state === 'before') {
    throw new StudioError('DATASET_EMPTY', `${name} contains no JSON array.`, 'Choose a file that contains data.');
  }
  if (state === 'element') {
    const location = { row: row + 1, line: elementStarted ? elementStartLine : line };
    yield {
      ok: false,
      location,
      reason: 'invalid_json',
      message: `${name} ends at line ${line} before the JSON array is closed; element ${row + 1} is incomplete (truncated file?)`,
    };
  }
  if (trailingContentLine > 0) {
    yield {
      ok: false,
      location: { row: row + 1, line: trailingContentLine },
      reason: 'invalid_json',
      message: `content after the closing "]" of the array at line ${trailingContentLine} was ignored`,
    };
  }

  function appendSegment(segment: Buffer): void {
    if (segment.length === 0) return;
    elementBytes += segment.length;
    if (elementBytes <= maxBytes) parts.push(segment);
    else parts = [];
  }
}

function isJsonWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

// ---------------------------------------------------------------------------------------------
// CSV / TSV

/**
 * Reads CSV or TSV with papaparse's streaming parser. The first row is the header; every other
 * row becomes an object keyed by it. A row whose field count differs from the header's is
 * skipped as `ragged_row`. The bytes are decoded leniently (invalid sequences become U+FFFD), so
 * a row containing U+FFFD is skipped as `invalid_utf8`, even where the file really contains that
 * character. Rows carry no line number because a quoted field may span several lines.
 */
async function* readDelimited(filePath: string, delimiter: string | undefined, options: ReaderOptions): AsyncGenerator<RawRow> {
  const maxBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  let bytesRead = 0;
  const decoder = new TextDecoder('utf-8');
  const decode = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytesRead += chunk.length;
      options.onProgress?.(bytesRead);
      callback(null, decoder.decode(chunk, { stream: true }));
    },
    flush(callback) {
      callback(null, decoder.decode());
    },
  });
  const parser = Papa.parse(Papa.NODE_STREAM_INPUT, {
    header: false,
    skipEmptyLines: 'greedy',
    delimiter: delimiter ?? '',
  });
  const source = createReadStream(filePath, { highWaterMark: READ_CHUNK_BYTES });
  source.on('error', (error) => parser.destroy(error));
  source.pipe(decode).pipe(parser);

  let header: string[] | undefined;
  let row = 0;
  for await (const fields of parser as AsyncIterable<string[]>) {
    if (!header) {
      header = fields.map((field) => field.trim());
      continue;
    }
    row += 1;
    const location = { row };
    if (fields.length !== header.length) {
      yield {
        ok: false,
        location,
        reason: 'ragged_row',
        message: `row ${row} has ${fields.length} fields but the header has ${header.length}`,
      };
      continue;
    }
    const size = fields.reduce((total, field) => total + field.length, 0);
    if (size > maxBytes) {
      yield { ok: false, location, reason: 'too_long', message: `row ${row} is ${size} characters, over the limit of ${maxBytes}` };
      continue;
    }
    const badField = fields.findIndex((field) => field.includes('\ufffd'));
    if (badField >= 0) {
      yield {
        ok: false,
        location,
        reason: 'invalid_utf8',
        message: `row ${row}, column "${header[badField]}" is not valid UTF-8`,
      };
      continue;
    }
    const value: Record<string, string> = {};
    header.forEach((column, i) => (value[column] = fields[i]));
    yield { ok: true, location, value };
  }
}

// ---------------------------------------------------------------------------------------------
// Parquet

/**
 * Reads a Parquet file one row group at a time through hyparquet, which fetches only the byte
 * ranges it needs. ZSTD, Brotli, LZ4 and Gzip pages decode through hyparquet-compressors. BigInt
 * values become numbers when they fit, else strings, so rows stay JSON-serializable.
 */
async function* readParquet(filePath: string, options: ReaderOptions): AsyncGenerator<RawRow> {
  const name = path.basename(filePath);
  const file = await asyncBufferFromFile(filePath);

  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(file);
  } catch (error) {
    throw new StudioError(
      'DATASET_PARSE',
      `${name} is not a readable Parquet file: ${(error as Error).message}`,
      'The file may be truncated or still being written: copy or export it again.',
    );
  }

  let rowStart = 0;
  for (const [groupIndex, group] of metadata.row_groups.entries()) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: Record<string, unknown>[] | undefined;
    let failure: string | undefined;
    try {
      rows = await parquetReadObjects({ file, metadata, compressors, rowStart, rowEnd });
    } catch (error) {
      failure = (error as Error).message;
    }

    for (let i = rowStart; i < rowEnd; i++) {
      const location = { row: i + 1 };
      if (rows) {
        yield { ok: true, location, value: jsonSafe(rows[i - rowStart]) };
      } else {
        yield {
          ok: false,
          location,
          reason: 'unreadable',
          message: `row group ${groupIndex + 1} (rows ${rowStart + 1}-${rowEnd}) cannot be decoded: ${failure}`,
        };
      }
    }
    rowStart = rowEnd;
    // Progress is in bytes for every format; here it is estimated from the share of rows read.
    options.onProgress?.(Math.round((file.byteLength * rowEnd) / Math.max(1, Number(metadata.num_rows))));
  }
}

function jsonSafe(value: unknown): unknown {
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(value) : value.toString();
  }
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<number | bigint>, jsonSafe);
  if (typeof value === 'object' && value !== null) {
    const result: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) result[key] = jsonSafe(item);
    return result;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Plain text

/**
 * Reads plain text as one record `{text}` per paragraph: a run of non-blank lines, separated from
 * the next by one or more blank lines. Line ends inside a paragraph are kept as "\n". A paragraph
 * with an invalid line is skipped whole.
 */
async function* readTextParagraphs(filePath: string, options: ReaderOptions): AsyncGenerator<RawRow> {
  const maxBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  let lines: string[] = [];
  let size = 0;
  let startLine = 0;
  let failure: { reason: SkipReason; message: string } | undefined;
  let row = 0;

  const finishParagraph = (): RawRow => {
    row += 1;
    const location = { row, line: startLine };
    const result: RawRow = failure
      ? { ok: false, location, ...failure }
      : size > maxBytes
        ? { ok: false, location, reason: 'too_long', message: `paragraph at line ${startLine} is over the limit of ${maxBytes} bytes` }
        : { ok: true, location, value: { text: lines.join('\n') } };
    lines = [];
    size = 0;
    failure = undefined;
    return result;
  };

  for await (const line of splitLines(filePath, maxBytes, options.onProgress)) {
    const blank = line.text !== undefined && line.text.trim() === '';
    if (blank) {
      if (startLine > 0) yield finishParagraph();
      startLine = 0;
      continue;
    }
    if (startLine === 0) startLine = line.lineNumber;
    if (line.text === undefined) {
      failure ??= { reason: line.reason, message: line.message };
      continue;
    }
    size += line.text.length + 1;
    if (size <= maxBytes) lines.push(line.text);
    else lines = [];
  }
  if (startLine > 0) yield finishParagraph();
}
