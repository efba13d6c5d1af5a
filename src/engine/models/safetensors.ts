/**
 * Reader and writer for the safetensors format (https://github.com/huggingface/safetensors):
 * an 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
 * `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the end of the header), then
 * the raw little-endian tensor data.
 *
 * Every header entry is checked against the file size before any data is read, so a truncated
 * or hostile file gives a StudioError naming the file and tensor instead of reading garbage.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError } from '../../shared/errors';

/** Headers larger than this are rejected; real checkpoints have headers of a few MB at most. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Floating dtypes that load as float32 weights. */
const FLOAT_DTYPES = new Set<SafetensorsDtype>(['F64', 'F32', 'F16', 'BF16']);

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte range of the data in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** Reads and validates the header of a safetensors file. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForReading(file);
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) {
      throw formatError(file, `the file is ${fileSize} bytes long, shorter than the 8-byte header length`);
    }
    const lengthBytes = Buffer.alloc(8);
    fs.readSync(fd, lengthBytes, 0, 8, 0);
    const headerLength = Number(lengthBytes.readBigUInt64LE(0));
    if (headerLength > MAX_HEADER_BYTES) {
      throw formatError(file, `the header declares ${headerLength} bytes, more than the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (8 + headerLength > fileSize) {
      throw formatError(file, `the header declares ${headerLength} bytes but the file has only ${fileSize - 8} after the length (truncated file?)`);
    }

    const headerBytes = Buffer.alloc(headerLength);
    fs.readSync(fd, headerBytes, 0, headerLength, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(headerBytes.toString('utf8'));
    } catch (error) {
      throw formatError(file, `the header is not valid JSON (${(error as Error).message})`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw formatError(file, 'the header is not a JSON object');
    }

    const dataStart = 8 + headerLength;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = (entry ?? {}) as Record<string, string>;
        continue;
      }
      tensors.set(name, validateEntry(file, name, entry, dataStart, fileSize));
    }
    checkNoOverlap(file, tensors);
    return { file, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

function validateEntry(file: string, name: string, entry: unknown, dataStart: number, fileSize: number): TensorInfo {
  const record = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof record !== 'object' || record === null) {
    throw formatError(file, `tensor "${name}" has no dtype/shape/data_offsets entry`);
  }
  const dtype = record.dtype as SafetensorsDtype;
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
    throw formatError(file, `tensor "${name}" has unknown dtype ${JSON.stringify(record.dtype)}; known dtypes are ${Object.keys(DTYPE_BYTES).join(', ')}`);
  }
  const shape = record.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw formatError(file, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
  }
  const offsets = record.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw formatError(file, `tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [relBegin, relEnd] = offsets as [number, number];
  const byteLength = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
  if (relEnd < relBegin || relEnd - relBegin !== byteLength) {
    throw formatError(file, `tensor "${name}" (${dtype} ${JSON.stringify(shape)}) needs ${byteLength} bytes but data_offsets [${relBegin}, ${relEnd}] span ${relEnd - relBegin}`);
  }
  const begin = dataStart + relBegin;
  const end = dataStart + relEnd;
  if (end > fileSize) {
    throw formatError(file, `tensor "${name}" ends at byte ${end} but the file has ${fileSize} bytes (truncated file?)`);
  }
  return { dtype, shape: shape as number[], begin, end };
}

/** Two tensors must not share bytes: each range ends at or before the next one begins. */
function checkNoOverlap(file: string, tensors: Map<string, TensorInfo>): void {
  const ranges = [...tensors].filter(([, info]) => info.end > info.begin).sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const [previousName, previous] = ranges[i - 1];
    const [name, info] = ranges[i];
    if (info.begin < previous.end) {
      throw formatError(file, `the data of tensors "${previousName}" and "${name}" overlap (bytes ${previous.begin}-${previous.end} and ${info.begin}-${info.end})`);
    }
  }
}

/** Reads one tensor as float32 (F16, BF16 and F64 are converted). */
export function readTensorAsFloat32(header: SafetensorsHeader, name: string): Float32Array {
  const info = header.tensors.get(name);
  if (!info) throw formatError(header.file, `tensor "${name}" is not in the file`);
  if (!FLOAT_DTYPES.has(info.dtype)) {
    throw formatError(header.file, `tensor "${name}" has dtype ${info.dtype}; only F32, F16, BF16 and F64 weights can be loaded`);
  }
  const bytes = readRange(header.file, info.begin, info.end);
  return toFloat32(bytes, info.dtype);
}

/** Reads one integer tensor (I64/I32/...) as a plain number array; used for pre-tokenized data. */
export function readTensorAsNumbers(header: SafetensorsHeader, name: string): number[] {
  const info = header.tensors.get(name);
  if (!info) throw formatError(header.file, `tensor "${name}" is not in the file`);
  const bytes = readRange(header.file, info.begin, info.end);
  if (FLOAT_DTYPES.has(info.dtype)) return Array.from(toFloat32(bytes, info.dtype));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength / DTYPE_BYTES[info.dtype];
  const out: number[] = new Array(count);
  for (let i = 0; i < count; i++) {
    switch (info.dtype) {
      case 'I64': out[i] = Number(view.getBigInt64(i * 8, true)); break;
      case 'I32': out[i] = view.getInt32(i * 4, true); break;
      case 'I16': out[i] = view.getInt16(i * 2, true); break;
      case 'I8': out[i] = view.getInt8(i); break;
      default: out[i] = view.getUint8(i);
    }
  }
  return out;
}

function readRange(file: string, begin: number, end: number): Uint8Array {
  const fd = openForReading(file);
  try {
    const buffer = Buffer.alloc(end - begin);
    let done = 0;
    while (done < buffer.length) {
      const n = fs.readSync(fd, buffer, done, buffer.length - done, begin + done);
      if (n === 0) throw formatError(file, `unexpected end of file at byte ${begin + done}`);
      done += n;
    }
    return buffer;
  } finally {
    fs.closeSync(fd);
  }
}

function toFloat32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      // Copying the bytes into a fresh buffer aligns them; every platform Node runs on is little-endian.
      const copy = new Uint8Array(bytes.byteLength);
      copy.set(bytes);
      return new Float32Array(copy.buffer);
    }
    case 'F64': {
      const out = new Float32Array(bytes.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case 'F16': {
      const out = new Float32Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      return out;
    }
    case 'BF16': {
      // bfloat16 is the upper half of a float32, so widening is a 16-bit shift.
      const out = new Float32Array(bytes.byteLength / 2);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    default:
      throw new Error(`toFloat32: unsupported dtype ${dtype}`);
  }
}

/** Converts IEEE 754 half-precision bits to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Converts a number to IEEE 754 half-precision bits (round to nearest even). */
export function floatToHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  let mantissa = bits & 0x7fffff;
  if (((bits >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  if (exponent >= 0x1f) return sign | 0x7c00;
  if (exponent <= 0) {
    if (exponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - exponent;
    let half = mantissa >> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = sign | (exponent << 10) | (mantissa >> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && half & 1)) half++;
  return half;
}

export interface TensorToWrite {
  dtype: 'F32' | 'F16' | 'BF16' | 'I64' | 'I32';
  shape: number[];
  data: Float32Array | Int32Array | number[];
}

/**
 * Writes tensors to a safetensors file. Names are written in sorted order and the header is
 * padded with spaces to a multiple of 8 bytes, as the reference implementation does.
 */
export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const chunks: Buffer[] = [];
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const tensor = tensors[name];
    const bytes = encodeTensor(name, tensor);
    header[name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, Buffer.concat([lengthBytes, headerBytes, ...chunks]));
}

function encodeTensor(name: string, tensor: TensorToWrite): Buffer {
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== count) {
    throw new StudioError('SHAPE_MISMATCH', `Tensor "${name}" has ${tensor.data.length} values but shape ${JSON.stringify(tensor.shape)} needs ${count}.`);
  }
  const bytes = Buffer.alloc(count * DTYPE_BYTES[tensor.dtype]);
  for (let i = 0; i < count; i++) {
    const value = tensor.data[i];
    switch (tensor.dtype) {
      case 'F32': bytes.writeFloatLE(value, i * 4); break;
      case 'F16': bytes.writeUInt16LE(floatToHalf(value), i * 2); break;
      case 'BF16': bytes.writeUInt16LE(floatToBf16(value), i * 2); break;
      case 'I64': bytes.writeBigInt64LE(BigInt(Math.round(value)), i * 8); break;
      case 'I32': bytes.writeInt32LE(value, i * 4); break;
    }
  }
  return bytes;
}

function floatToBf16(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return 0x7fc0;
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

function openForReading(file: string): number {
  try {
    if (fs.statSync(file).isDirectory()) {
      throw new StudioError('MODEL_FORMAT', `${file} is a folder, not a safetensors file.`, 'Replace it with the weights file downloaded from the model repository.');
    }
    return fs.openSync(file, 'r');
  } catch (error) {
    if (error instanceof StudioError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new StudioError('MODEL_FILES_MISSING', `${file} does not exist.`, 'Check the folder and that every shard was downloaded.');
    }
    throw new StudioError('MODEL_FORMAT', `${file} could not be opened (${code ?? (error as Error).message}).`);
  }
}

function formatError(file: string, problem: string): StudioError {
  return new StudioError(
    'MODEL_FORMAT',
    `${file} is not a valid safetensors file: ${problem}.`,
    'Re-download or re-save the file (e.g. model.save_pretrained(dir, safe_serialization=True)).',
  );
}
