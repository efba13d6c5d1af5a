/**
 * Dataset format detection, from the file extension and the first bytes of the file.
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';

import { StudioError } from '../../shared/errors';

export type DatasetFormat = 'jsonl' | 'json' | 'csv' | 'tsv' | 'parquet' | 'text';

export const DATASET_FORMATS: readonly DatasetFormat[] = ['jsonl', 'json', 'csv', 'tsv', 'parquet', 'text'];

const EXTENSION_FORMATS: Record<string, DatasetFormat> = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.tab': 'tsv',
  '.parquet': 'parquet',
  '.pq': 'parquet',
  '.txt': 'text',
  '.text': 'text',
  '.md': 'text',
};

/** Bytes read from the start of the file to recognize its format. */
const SNIFF_BYTES = 4096;
const PARQUET_MAGIC = 'PAR1';
const UTF8_BOM = [0xef, 0xbb, 0xbf];

/**
 * Detects the format of a dataset file.
 *
 * - Parquet: the `PAR1` magic at the start, whatever the extension.
 * - `.json`: a JSON array when the first non-blank character is `[`; JSON Lines when it is `{`.
 * - `.jsonl`, `.csv`, `.tsv`, `.txt` and the other known extensions: by extension.
 * - Any other extension: `[` means a JSON array and `{` JSON Lines; anything else is rejected.
 *
 * @throws StudioError DATASET_EMPTY for an empty or blank file, DATASET_PARSE for binary content
 *   or an unknown format, NOT_FOUND when the file does not exist.
 */
export async function detectFormat(filePath: string): Promise<DatasetFormat> {
  const head = await readHead(filePath);
  const name = path.basename(filePath);
  const extension = path.extname(filePath).toLowerCase();

  if (head.length === 0) {
    throw new StudioError('DATASET_EMPTY', `${name} is empty (0 bytes).`, 'Choose a file that contains data.');
  }
  if (head.subarray(0, 4).toString('latin1') === PARQUET_MAGIC) return 'parquet';
  if (extension === '.parquet' || extension === '.pq') {
    throw new StudioError(
      'DATASET_PARSE',
      `${name} is not a Parquet file: it does not start with the PAR1 magic bytes.`,
      'Export the data again as Parquet, or give the file the extension of its real format.',
    );
  }

  const firstChar = firstNonBlankCharacter(head);
  if (firstChar === undefined && head.length < SNIFF_BYTES) {
    throw new StudioError('DATASET_EMPTY', `${name} contains only whitespace.`, 'Choose a file that contains data.');
  }

  if (extension === '.json') return firstChar === '[' ? 'json' : 'jsonl';
  const byExtension = EXTENSION_FORMATS[extension];
  if (byExtension) return byExtension;

  if (head.includes(0)) {
    throw new StudioError(
      'DATASET_PARSE',
      `${name} is a binary file of unknown format (extension "${extension || 'none'}").`,
      `Supported formats: ${DATASET_FORMATS.join(', ')}. Convert the data to one of them.`,
    );
  }
  if (firstChar === '[') return 'json';
  if (firstChar === '{') return 'jsonl';
  throw new StudioError(
    'DATASET_PARSE',
    `Cannot tell the format of ${name}: the extension "${extension || 'none'}" is unknown and the content is not JSON.`,
    'Rename the file with the extension of its format: .jsonl, .json, .csv, .tsv, .parquet or .txt.',
  );
}

/** Total size of the file in bytes, for progress reporting. */
export async function fileSize(filePath: string): Promise<number> {
  return (await stat(filePath)).size;
}

async function readHead(filePath: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(filePath, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new StudioError('NOT_FOUND', `Dataset file not found: ${filePath}`, 'Check the path and try again.');
    }
    throw new StudioError('DATASET_PARSE', `Cannot open the dataset file ${filePath}: ${(error as Error).message}`, 'Check that the path names a readable file.');
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      throw new StudioError('NOT_FOUND', `Dataset path ${filePath} is ${info.isDirectory() ? 'a folder' : 'not a regular file'}.`, 'Pick the dataset file inside the folder (.jsonl, .json, .csv, .tsv, .parquet or .txt).');
    }
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function firstNonBlankCharacter(head: Buffer): string | undefined {
  let start = 0;
  if (UTF8_BOM.every((byte, i) => head[i] === byte)) start = UTF8_BOM.length;
  for (let i = start; i < head.length; i++) {
    const byte = head[i];
    if (byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) return String.fromCharCode(byte);
  }
  return undefined;
}
