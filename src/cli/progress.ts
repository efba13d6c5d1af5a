/**
 * The training progress line on stderr: step, loss, tokens/s and ETA. On a terminal it redraws
 * one line; otherwise it prints a line at every tenth of the run and at validation steps.
 */
import type { ProgressInfo, StepMetrics } from '../shared/protocol';

export class ProgressBar {
  private readonly stream = process.stderr;
  private readonly interactive = Boolean(process.stderr.isTTY);
  private lastPrintedDecile = -1;
  private total = 0;
  private eta?: number;
  private lastValLoss?: number;

  progress(progress: ProgressInfo): void {
    if (progress.totalSteps) this.total = progress.totalSteps;
    this.eta = progress.etaSeconds;
    if (progress.phase !== 'training') this.write(`${progress.phase}…`, true);
  }

  metrics(metrics: StepMetrics): void {
    if (metrics.valLoss !== undefined) this.lastValLoss = metrics.valLoss;
    const total = this.total || metrics.step;
    const width = 24;
    const filled = Math.round((metrics.step / total) * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    const parts = [
      `step ${metrics.step}/${total}`,
      bar,
      `loss ${metrics.loss.toFixed(4)}`,
      this.lastValLoss !== undefined ? `val ${this.lastValLoss.toFixed(4)}` : '',
      `${Math.round(metrics.tokensPerSecond)} tok/s`,
      this.eta !== undefined && Number.isFinite(this.eta) ? `ETA ${formatDuration(this.eta)}` : '',
    ].filter(Boolean);
    const decile = Math.floor((metrics.step / total) * 10);
    const force = metrics.valLoss !== undefined || metrics.step === total || decile !== this.lastPrintedDecile;
    if (force) this.lastPrintedDecile = decile;
    this.write(parts.join('  '), force);
  }

  log(line: string): void {
    this.clear();
    this.stream.write(`${line}\n`);
  }

  done(): void {
    if (this.interactive) this.stream.write('\n');
  }

  private write(text: string, force: boolean): void {
    if (this.interactive) this.stream.write(`\r\x1b[2K${text}`);
    else if (force) this.stream.write(`${text}\n`);
  }

  private clear(): void {
    if (this.interactive) this.stream.write('\r\x1b[2K');
  }
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}
