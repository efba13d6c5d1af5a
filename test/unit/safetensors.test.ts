import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared/errors';
import { floatToHalf, halfToFloat, readSafetensorsHeader, readTensorAsFloat32, readTensorAsNumbers, writeSafetensors } from '../../src/engine/models/safetensors';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'safetensors-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function rawFile(name: string, header: unknown, data: Buffer, declaredLength?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(declaredLength ?? BigInt(json.length));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([length, json, data]));
  return file;
}

function expectFormatError(action: () => unknown, fragment: string): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('MODEL_FORMAT');
    expect((error as StudioError).message).toContain(fragment);
    return;
  }
  throw new Error('expected an error');
}

describe('safetensors', () => {
  it('round trip keeps F32, F16 and BF16 values', () => {
    const file = path.join(dir, 'round.safetensors');
    const values = [0, 1, -2.5, 3.140625, 65504, -0.0001220703125];
    writeSafetensors(file, {
      a: { dtype: 'F32', shape: [2, 3], data: Float32Array.from(values) },
      b: { dtype: 'F16', shape: [6], data: values },
      c: { dtype: 'BF16', shape: [3, 2], data: [1, -2, 0.5, 256, -1024, 0] },
      ids: { dtype: 'I64', shape: [3], data: [1, 50256, 7] },
    }, { format: 'pt' });
    const header = readSafetensorsHeader(file);
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(header.tensors.get('a')).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expect(Array.from(readTensorAsFloat32(header, 'a'))).toEqual(Array.from(Float32Array.from(values)));
    expect(Array.from(readTensorAsFloat32(header, 'b'))).toEqual(values);
    expect(Array.from(readTensorAsFloat32(header, 'c'))).toEqual([1, -2, 0.5, 256, -1024, 0]);
    expect(readTensorAsNumbers(header, 'ids')).toEqual([1, 50256, 7]);
    // The header is padded so the data starts on an 8-byte boundary.
    expect((8 + Number(fs.readFileSync(file).readBigUInt64LE(0))) % 8).toBe(0);
  });

  it('half precision conversion matches IEEE 754', () => {
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(-2)).toBe(0xc000);
    expect(floatToHalf(65504)).toBe(0x7bff);
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });

  it('rejects a truncated file', () => {
    const file = path.join(dir, 'truncated.safetensors');
    writeSafetensors(file, { w: { dtype: 'F32', shape: [4, 4], data: new Float32Array(16) } });
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 10));
    expectFormatError(() => readSafetensorsHeader(file), 'tensor "w" ends at byte');
  });

  it('rejects a file shorter than the length prefix', () => {
    const file = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectFormatError(() => readSafetensorsHeader(file), 'shorter than the 8-byte header length');
  });

  it('rejects a header longer than the limit', () => {
    const file = rawFile('huge-header.safetensors', {}, Buffer.alloc(0), 200n * 1024n * 1024n);
    expectFormatError(() => readSafetensorsHeader(file), 'more than the 104857600-byte limit');
  });

  it('rejects a header longer than the file', () => {
    const file = rawFile('long-header.safetensors', {}, Buffer.alloc(0), 4096n);
    expectFormatError(() => readSafetensorsHeader(file), 'truncated file');
  });

  it('rejects offsets outside the file', () => {
    const file = rawFile('offsets.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, v: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, Buffer.alloc(8));
    expectFormatError(() => readSafetensorsHeader(file), 'tensor "v" ends at byte');
  });

  it('rejects offsets that disagree with the shape', () => {
    const file = rawFile('mismatch.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, Buffer.alloc(8));
    expectFormatError(() => readSafetensorsHeader(file), 'needs 12 bytes but data_offsets [0, 8] span 8');
  });

  it('rejects an unknown dtype', () => {
    const file = rawFile('dtype.safetensors', { w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, Buffer.alloc(2));
    expectFormatError(() => readSafetensorsHeader(file), 'unknown dtype "F8_E4M3"');
  });

  it('rejects a header that is not JSON', () => {
    const file = path.join(dir, 'garbage.safetensors');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(5n);
    fs.writeFileSync(file, Buffer.concat([length, Buffer.from('{nope')]));
    expectFormatError(() => readSafetensorsHeader(file), 'the header is not valid JSON');
  });

  it('rejects integer tensors as weights', () => {
    const file = path.join(dir, 'int.safetensors');
    writeSafetensors(file, { ids: { dtype: 'I32', shape: [2], data: [1, 2] } });
    expectFormatError(() => readTensorAsFloat32(readSafetensorsHeader(file), 'ids'), 'only F32, F16, BF16 and F64 weights');
  });
});
