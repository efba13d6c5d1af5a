/**
 * Validation report of a dataset import: rows read, kept and skipped (with location and reason),
 * and a length histogram of the kept examples.
 */
import { mulberry32 } from './random';

/** Reason a row was left out of the imported dataset. */
export type SkipReason =
  | 'invalid_json'
  | 'invalid_utf8'
  | 'missing_field'
  | 'wrong_type'
  | 'empty_text'
  | 'too_long'
  | 'ragged_row'
  | 'unreadable'
  | 'template_error';

/** Position of a row in the source file. */
export interface RowLocation {
  /** 1-based ordinal of the row among the file's records. */
  row: number;
  /** 1-based line where the row starts, for text formats that track lines. */
  line?: number;
}

export interface SkippedRow extends RowLocation {
  reason: SkipReason;
  message: string;
}

export interface HistogramBin {
  /** Inclusive lower bound. */
  start: number;
  /** Exclusive upper bound. */
  end: number;
  count: number;
}

export interface LengthHistogram {
  /** `tokens` when a tokenizer measured the examples, else `characters`. */
  unit: 'tokens' | 'characters';
  count: number;
  min: number;
  median: number;
  p95: number;
  max: number;
  bins: HistogramBin[];
  /** True when the quantiles come from a uniform sample of the lengths, not from all of them. */
  sampled: boolean;
}

export interface ValidationReport {
  rowsRead: number;
  rowsKept: number;
  rowsSkipped: number;
  skippedByReason: Partial<Record<SkipReason, number>>;
  /** The first MAX_SKIP_DETAILS skipped rows; `skippedByReason` counts all of them. */
  skipped: SkippedRow[];
  /** Kept examples longer than `maxSeqLength`, which training truncates. */
  truncated: number;
  maxSeqLength?: number;
  lengths: LengthHistogram;
  notes: string[];
}

export const MAX_SKIP_DETAILS = 200;

/** Lengths kept for the quantiles. Past this count, a seeded reservoir sample replaces the full list. */
const LENGTH_SAMPLE_SIZE = 1 << 20;
const HISTOGRAM_BINS = 20;

/**
 * Collects a report while rows stream by. Memory stays bounded: skip details are capped at
 * MAX_SKIP_DETAILS and lengths at LENGTH_SAMPLE_SIZE (reservoir sampling past that).
 */
export class ReportBuilder {
  private rowsRead = 0;
  private rowsKept = 0;
  private readonly skipped: SkippedRow[] = [];
  private readonly skippedByReason: Partial<Record<SkipReason, number>> = {};
  private rowsSkipped = 0;
  private truncated = 0;
  private readonly notes: string[] = [];

  private lengthSample = new Float64Array(1024);
  private sampleCount = 0;
  private lengthsSeen = 0;
  private min = Infinity;
  private max = -Infinity;
  private readonly random = mulberry32(0x5eed);

  /** `maxSeqLength`, when given, counts kept lengths above it as truncated. */
  constructor(
    private readonly unit: 'tokens' | 'characters',
    private readonly maxSeqLength?: number,
  ) {}

  /** Counts a row taken from the source, kept or not. */
  countRead(): void {
    this.rowsRead += 1;
  }

  skip(location: RowLocation, reason: SkipReason, message: string): void {
    this.rowsSkipped += 1;
    this.skippedByReason[reason] = (this.skippedByReason[reason] ?? 0) + 1;
    if (this.skipped.length < MAX_SKIP_DETAILS) {
      const entry: SkippedRow = { row: location.row, reason, message };
      if (location.line !== undefined) entry.line = location.line;
      this.skipped.push(entry);
    }
  }

  /** Counts a kept example of `length` units (tokens or characters). */
  keep(length: number): void {
    this.rowsKept += 1;
    if (this.maxSeqLength !== undefined && length > this.maxSeqLength) this.truncated += 1;
    this.addLength(length);
  }

  note(text: string): void {
    if (!this.notes.includes(text)) this.notes.push(text);
  }

  get keptCount(): number {
    return this.rowsKept;
  }

  get readCount(): number {
    return this.rowsRead;
  }

  build(): ValidationReport {
    const report: ValidationReport = {
      rowsRead: this.rowsRead,
      rowsKept: this.rowsKept,
      rowsSkipped: this.rowsSkipped,
      skippedByReason: { ...this.skippedByReason },
      skipped: [...this.skipped],
      truncated: this.truncated,
      lengths: this.buildHistogram(),
      notes: [...this.notes],
    };
    if (this.maxSeqLength !== undefined) report.maxSeqLength = this.maxSeqLength;
    return report;
  }

  private addLength(length: number): void {
    this.lengthsSeen += 1;
    this.min = Math.min(this.min, length);
    this.max = Math.max(this.max, length);

    if (this.sampleCount < LENGTH_SAMPLE_SIZE) {
      if (this.sampleCount === this.lengthSample.length) {
        const grown = new Float64Array(Math.min(LENGTH_SAMPLE_SIZE, this.lengthSample.length * 2));
        grown.set(this.lengthSample);
        this.lengthSample = grown;
      }
      this.lengthSample[this.sampleCount++] = length;
      return;
    }

    // Reservoir sampling (Algorithm R): each length seen so far stays with equal probability.
    const slot = Math.floor(this.random() * this.lengthsSeen);
    if (slot < LENGTH_SAMPLE_SIZE) this.lengthSample[slot] = length;
  }

  private buildHistogram(): LengthHistogram {
    if (this.lengthsSeen === 0) {
      return { unit: this.unit, count: 0, min: 0, median: 0, p95: 0, max: 0, bins: [], sampled: false };
    }
    const sorted = this.lengthSample.slice(0, this.sampleCount).sort();
    return {
      unit: this.unit,
      count: this.lengthsSeen,
      min: this.min,
      median: quantile(sorted, 0.5),
      p95: quantile(sorted, 0.95),
      max: this.max,
      bins: equalWidthBins(sorted, this.min, this.max, this.lengthsSeen / this.sampleCount),
      sampled: this.lengthsSeen > this.sampleCount,
    };
  }
}

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: Float64Array, q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1];
}

/**
 * Splits [min, max] into HISTOGRAM_BINS bins of equal integer width; counts are scaled by
 * `weight` when the values are a sample.
 */
function equalWidthBins(sorted: Float64Array, min: number, max: number, weight: number): HistogramBin[] {
  const width = Math.max(1, Math.ceil((max - min + 1) / HISTOGRAM_BINS));
  const bins: HistogramBin[] = [];
  for (let start = min; start <= max; start += width) bins.push({ start, end: start + width, count: 0 });
  for (const value of sorted) bins[Math.min(bins.length - 1, Math.floor((value - min) / width))].count += 1;
  if (weight !== 1) for (const bin of bins) bin.count = Math.round(bin.count * weight);
  return bins;
}
