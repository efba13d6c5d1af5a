/**
 * Dataset store: imports a user's file into `<appDataDir>/datasets/<id>/` as normalized JSON
 * Lines (`data.jsonl`, one NormalizedRecord per line) with its SHA-256 and a validation report
 * (`report.json`), and reads the normalized records back for training.
 *
 * Import streams the source: memory stays bounded by the largest record, not the file size.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';

import { encodeRecord } from '../../engine/data/encode';
import { detectFormat, fileSize } from '../../engine/data/formats';
import type { DatasetFormat } from '../../engine/data/formats';
import { normalizeRow } from '../../engine/data/normalize';
import type { NormalizedRecord } from '../../engine/data/normalize';
import { readRows, splitLines } from '../../engine/data/readers';
import type { RawRow } from '../../engine/data/readers';
import { ReportBuilder } from '../../engine/data/report';
import type { RowLocation, ValidationReport } from '../../engine/data/report';
import { DATASET_SCHEMAS, SCHEMA_SAMPLE_ROWS, detectSchema } from '../../engine/data/schema';
import type { DatasetSchema } from '../../engine/data/schema';
import type { Tokenizer } from '../../engine/tokenizer';
import { StudioError } from '../../shared/errors';
import type { DatasetRecord } from '../../shared/records';
import { createDatasetId } from '../store/ids';
import type { NewDataset } from '../store';

export const DATA_FILE_NAME = 'data.jsonl';
export const REPORT_FILE_NAME = 'report.json';

/** Import progress, emitted each time another PROGRESS_STEP of the file has been read, and once at the end. */
export interface ImportProgress {
  path: string;
  bytesRead: number;
  totalBytes: number;
  rowsRead: number;
}

export interface ImportOptions {
  /** The app data folder; the dataset goes to `<appDataDir>/datasets/<id>/`. */
  appDataDir: string;
  /** Display name. Default: the file name without its extension. */
  name?: string;
  /** Reads every row with this schema instead of detecting one. */
  schemaOverride?: DatasetSchema;
  /** With a tokenizer, examples longer than this are counted as truncated in the report. */
  maxSeqLength?: number;
  /**
   * Measures lengths in tokens and skips rows the model cannot encode (chat template errors).
   * Without one, lengths are in characters.
   */
  tokenizer?: Tokenizer;
  /** Records longer than this many bytes are skipped as `too_long`. Default 64 MiB. */
  maxRecordBytes?: number;
  onProgress?: (progress: ImportProgress) => void;
}

/** The import result: the dataset's store row, with the report in its typed form. */
export interface ImportedDataset extends DatasetRecord {
  format: DatasetFormat;
  schema: DatasetSchema;
  report: ValidationReport;
}

/** The part of RunStore the dataset service uses. */
export interface DatasetStore {
  insertDataset(dataset: NewDataset): DatasetRecord;
  getDataset(id: string): DatasetRecord;
  listDatasets(): DatasetRecord[];
  deleteDataset(id: string): string;
}

/** Share of the file between two progress events. */
const PROGRESS_STEP = 0.01;

/**
 * Imports a dataset file and returns its record; the caller persists it (DatasetService does).
 *
 * Steps: detect the format, read rows as a stream, and detect the schema from the first rows.
 * Then normalize each row, skipping and reporting bad rows, and write the normalized copy to a
 * temporary name while hashing it. Last, rename it into place beside `report.json`.
 *
 * @throws StudioError DATASET_EMPTY when no row is usable, DATASET_PARSE when the file cannot be
 *   read at all (unknown format, damaged Parquet, no known schema), NOT_FOUND for a missing file.
 *   Nothing is left in the app data folder after a failure.
 */
export async function importDataset(sourcePath: string, options: ImportOptions): Promise<ImportedDataset> {
  const absolutePath = path.resolve(sourcePath);
  const fileName = path.basename(absolutePath);
  const format = await detectFormat(absolutePath);
  const totalBytes = await fileSize(absolutePath);

  const id = createDatasetId();
  const datasetDir = path.join(options.appDataDir, 'datasets', id);
  await mkdir(datasetDir, { recursive: true });

  try {
    return await writeDataset({ absolutePath, fileName, format, totalBytes, id, datasetDir, options });
  } catch (error) {
    await rm(datasetDir, { recursive: true, force: true });
    throw error;
  }
}

interface ImportJob {
  absolutePath: string;
  fileName: string;
  format: DatasetFormat;
  totalBytes: number;
  id: string;
  datasetDir: string;
  options: ImportOptions;
}

async function writeDataset(job: ImportJob): Promise<ImportedDataset> {
  const { absolutePath, totalBytes, options } = job;
  const progress = progressReporter(absolutePath, totalBytes, options.onProgress);
  const rows = readRows(absolutePath, job.format, {
    maxRecordBytes: options.maxRecordBytes,
    onProgress: (bytesRead) => progress.bytes(bytesRead),
  });

  try {
    return await readAndWrite(job, rows, progress);
  } finally {
    // Closes the source file when reading stopped early on an error.
    await rows.return(undefined);
  }
}

async function readAndWrite(
  job: ImportJob,
  rows: AsyncGenerator<RawRow>,
  progress: ReturnType<typeof progressReporter>,
): Promise<ImportedDataset> {
  const { fileName, format, options } = job;
  const tokenizer = options.tokenizer;

  // 1. Schema: the override, or a vote over the first rows that parsed.
  const buffered: RawRow[] = [];
  const samples: unknown[] = [];
  let next = await rows.next();
  while (!next.done && samples.length < SCHEMA_SAMPLE_ROWS) {
    buffered.push(next.value);
    if (next.value.ok) samples.push(next.value.value);
    next = await rows.next();
  }
  if (!next.done) buffered.push(next.value);
  const schema = options.schemaOverride ?? detectSchemaOrEmpty(samples, buffered, fileName);
  if (!DATASET_SCHEMAS.includes(schema)) {
    throw new StudioError('INVALID_ARGUMENT', `Unknown schema "${schema}".`, `Choose one of: ${DATASET_SCHEMAS.join(', ')}.`);
  }

  // 2. Normalize and write, hashing the exact bytes written.
  const unit = tokenizer || schema === 'tokens' ? 'tokens' : 'characters';
  // Truncation is counted only where lengths are in tokens.
  const report = new ReportBuilder(unit, unit === 'tokens' ? options.maxSeqLength : undefined);
  const tempPath = path.join(job.datasetDir, `${DATA_FILE_NAME}.partial`);
  const output = createWriteStream(tempPath);
  const hash = createHash('sha256');

  const handle = async (row: RawRow): Promise<void> => {
    report.countRead();
    progress.rows(report.readCount);
    const where = describeLocation(row.location);
    if (!row.ok) {
      report.skip(row.location, row.reason, row.message);
      return;
    }
    const normalized = normalizeRow(row.value, schema);
    if (!normalized.ok) {
      report.skip(row.location, normalized.reason, `${where}: ${normalized.message}`);
      return;
    }

    let length = recordLength(normalized.record);
    if (tokenizer) {
      const encoded = encodeRecord(normalized.record, tokenizer, { maxSeqLength: options.maxSeqLength });
      if (!encoded.ok) {
        report.skip(row.location, encoded.reason, `${where}: ${encoded.message}`);
        return;
      }
      length = encoded.length;
    }

    const bytes = Buffer.from(JSON.stringify(normalized.record) + '\n', 'utf8');
    hash.update(bytes);
    if (!output.write(bytes)) await once(output, 'drain');
    report.keep(length);
  };

  try {
    for (const row of buffered) await handle(row);
    if (!next.done) for await (const row of rows) await handle(row);
  } finally {
    output.end();
    await once(output, 'close');
  }
  progress.finish(report.readCount);

  // 3. Report; an import that kept nothing fails.
  if (!tokenizer && unit === 'characters') {
    report.note('Lengths are counted in characters because no tokenizer was given; choose a model to count tokens and truncation.');
  }
  const validation = report.build();
  if (validation.rowsKept === 0) throw noUsableRows(fileName, validation);

  // 4. Move the files into place.
  const storedPath = path.join(job.datasetDir, DATA_FILE_NAME);
  await rename(tempPath, storedPath);
  const reportTemp = path.join(job.datasetDir, `${REPORT_FILE_NAME}.partial`);
  await writeFile(reportTemp, JSON.stringify(validation, null, 2) + '\n');
  await rename(reportTemp, path.join(job.datasetDir, REPORT_FILE_NAME));

  return {
    id: job.id,
    name: options.name?.trim() || path.basename(fileName, path.extname(fileName)),
    sourcePath: job.absolutePath,
    format,
    schema,
    sha256: hash.digest('hex'),
    rowsRead: validation.rowsRead,
    rowsKept: validation.rowsKept,
    rowsSkipped: validation.rowsSkipped,
    storedPath,
    report: validation,
    createdAt: new Date().toISOString(),
  };
}

/**
 * Reads the normalized records of an imported dataset (`data.jsonl`) in order.
 *
 * @throws StudioError DATASET_PARSE naming the line when the stored file was damaged.
 */
export async function* readNormalized(storedPath: string): AsyncGenerator<NormalizedRecord> {
  for await (const line of splitLines(storedPath)) {
    if (line.text === undefined) {
      throw damagedStore(storedPath, line.lineNumber, line.message);
    }
    if (line.text === '') continue;
    let record: NormalizedRecord;
    try {
      record = JSON.parse(line.text) as NormalizedRecord;
    } catch (error) {
      throw damagedStore(storedPath, line.lineNumber, (error as Error).message);
    }
    yield record;
  }
}

/**
 * Imports datasets and keeps their records in the run store. Deleting a dataset removes its
 * store entry first, then its folder.
 */
export class DatasetService {
  constructor(
    private readonly appDataDir: string,
    private readonly store?: DatasetStore,
  ) {}

  /** Imports a file; with a store, the record is inserted and returned as stored. */
  async import(sourcePath: string, options: Omit<ImportOptions, 'appDataDir'> = {}): Promise<ImportedDataset> {
    const imported = await importDataset(sourcePath, { ...options, appDataDir: this.appDataDir });
    if (!this.store) return imported;

    try {
      const stored = this.store.insertDataset(imported);
      return { ...imported, createdAt: stored.createdAt };
    } catch (error) {
      await rm(path.dirname(imported.storedPath), { recursive: true, force: true });
      throw error;
    }
  }

  list(): DatasetRecord[] {
    return this.requireStore().listDatasets();
  }

  get(id: string): DatasetRecord {
    return this.requireStore().getDataset(id);
  }

  async remove(id: string): Promise<void> {
    const storedPath = this.requireStore().deleteDataset(id);
    const folder = path.dirname(storedPath);
    // Only a folder directly inside <appDataDir>/datasets is deleted, whatever the stored path is.
    const datasetsRoot = path.resolve(this.appDataDir, 'datasets');
    if (path.dirname(path.resolve(folder)) === datasetsRoot) await rm(folder, { recursive: true, force: true });
  }

  private requireStore(): DatasetStore {
    if (!this.store) {
      throw new StudioError('INTERNAL', 'The dataset service was created without a run store.', 'Pass a RunStore to DatasetService.');
    }
    return this.store;
  }
}

function detectSchemaOrEmpty(samples: unknown[], buffered: RawRow[], fileName: string): DatasetSchema {
  if (samples.length > 0) return detectSchema(samples, fileName);
  const report = new ReportBuilder('characters');
  for (const row of buffered) {
    report.countRead();
    if (!row.ok) report.skip(row.location, row.reason, row.message);
  }
  throw noUsableRows(fileName, report.build());
}

function noUsableRows(fileName: string, report: ValidationReport): StudioError {
  if (report.rowsRead === 0) {
    return new StudioError('DATASET_EMPTY', `${fileName} contains no rows.`, 'Choose a file that contains data.');
  }
  const first = report.skipped[0];
  const reasons = Object.entries(report.skippedByReason)
    .map(([reason, count]) => `${count} ${reason}`)
    .join(', ');
  return new StudioError(
    'DATASET_EMPTY',
    `${fileName}: none of the ${report.rowsRead} rows is usable (${reasons}). First: ${first ? first.message : 'none'}.`,
    'Fix the rows listed, or choose the schema by hand if the columns were misread.',
  );
}

function damagedStore(storedPath: string, line: number, reason: string): StudioError {
  return new StudioError(
    'DATASET_PARSE',
    `The stored dataset ${storedPath} is damaged at line ${line}: ${reason}`,
    'Delete the dataset and import the source file again.',
  );
}

function describeLocation(location: RowLocation): string {
  return location.line !== undefined ? `line ${location.line}` : `row ${location.row}`;
}

/** Length of a record in characters (tokens for pre-tokenized records). */
function recordLength(record: NormalizedRecord): number {
  switch (record.kind) {
    case 'text':
      return record.text.length;
    case 'prompt_completion':
      return record.prompt.length + record.completion.length;
    case 'chat':
      return record.messages.reduce((total, message) => total + message.content.length, 0);
    case 'tokens':
      return record.input_ids.length;
  }
}

function progressReporter(filePath: string, totalBytes: number, listener: ((progress: ImportProgress) => void) | undefined) {
  let bytesRead = 0;
  let rowsRead = 0;
  let lastReported = -Infinity;
  const step = Math.max(1, Math.floor(totalBytes * PROGRESS_STEP));
  const emit = () => listener?.({ path: filePath, bytesRead, totalBytes, rowsRead });

  return {
    bytes(value: number) {
      bytesRead = Math.min(value, totalBytes);
      if (bytesRead - lastReported >= step) {
        lastReported = bytesRead;
        emit();
      }
    },
    rows(value: number) {
      rowsRead = value;
    },
    finish(value: number) {
      rowsRead = value;
      bytesRead = totalBytes;
      emit();
    },
  };
}
