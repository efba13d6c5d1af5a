import { defineStore } from 'pinia';
import type { RunDetail, RunEvent, RunSummary, Unsubscribe } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import type { ProgressInfo, StepMetrics } from '../../../shared/protocol';
import type { TrainConfig } from '../../../shared/train-config';
import { studio } from '../api';
import { asError } from '../format';

/** Lines of log kept per run in memory for the live log tail. */
const LOG_TAIL = 200;

export interface LiveRun {
  metrics: StepMetrics[];
  progress?: ProgressInfo;
  logs: RunEvent[];
}

const ACTIVE = new Set(['queued', 'running', 'paused']);

/** Every run, live metrics of running ones, the wizard's current run, and run actions. */
export const useRunsStore = defineStore('runs', {
  state: () => ({
    runs: [] as RunSummary[],
    loading: false,
    loaded: false,
    error: null as ErrorPayload | null,
    live: {} as Record<string, LiveRun>,
    details: {} as Record<string, RunDetail>,
    currentRunId: null as string | null,
    starting: false,
    startError: null as ErrorPayload | null,
    subscriptions: [] as Unsubscribe[],
  }),
  getters: {
    byId: (state) => (id: string) => state.runs.find((run) => run.id === id),
    current: (state): RunSummary | undefined => state.runs.find((run) => run.id === state.currentRunId),
    isActive: () => (run: RunSummary | undefined) => Boolean(run && ACTIVE.has(run.status)),
  },
  actions: {
    /** Subscribes to run events once for the life of the page. */
    subscribe(): void {
      if (this.subscriptions.length) return;
      const api = studio();
      this.subscriptions.push(
        api.on('run-updated', (run) => this.upsert(run)),
        api.on('run-removed', ({ id }) => this.forget(id)),
        api.on('run-metrics', ({ runId, metrics }) => {
          const live = this.liveFor(runId);
          const last = live.metrics[live.metrics.length - 1];
          if (last && last.step === metrics.step) live.metrics[live.metrics.length - 1] = { ...last, ...metrics };
          else live.metrics.push(metrics);
          const detail = this.details[runId];
          if (detail && detail.metrics !== live.metrics) detail.metrics = live.metrics;
        }),
        api.on('run-progress', ({ runId, progress }) => {
          this.liveFor(runId).progress = progress;
        }),
        api.on('run-log', ({ runId, event }) => {
          const logs = this.liveFor(runId).logs;
          logs.push(event);
          if (logs.length > LOG_TAIL) logs.splice(0, logs.length - LOG_TAIL);
        }),
      );
    },
    unsubscribe(): void {
      for (const unsubscribe of this.subscriptions) unsubscribe();
      this.subscriptions = [];
    },
    liveFor(runId: string): LiveRun {
      if (!this.live[runId]) this.live[runId] = { metrics: [], logs: [] };
      return this.live[runId];
    },
    upsert(run: RunSummary): void {
      const index = this.runs.findIndex((entry) => entry.id === run.id);
      if (index >= 0) this.runs[index] = run;
      else this.runs.unshift(run);
      const detail = this.details[run.id];
      if (detail) detail.run = run;
    },
    forget(id: string): void {
      this.runs = this.runs.filter((run) => run.id !== id);
      delete this.live[id];
      delete this.details[id];
      if (this.currentRunId === id) this.currentRunId = null;
    },
    async load(): Promise<void> {
      this.loading = true;
      this.error = null;
      try {
        this.runs = await studio().runs.list();
        this.loaded = true;
      } catch (error) {
        this.error = asError(error);
      } finally {
        this.loading = false;
      }
    },
    /** Loads config, metrics, events and artifacts; live metrics continue from there. */
    async fetchDetail(id: string): Promise<RunDetail | null> {
      try {
        const detail = await studio().runs.get({ id });
        const live = this.liveFor(id);
        if (detail.metrics.length >= live.metrics.length) live.metrics = detail.metrics;
        detail.metrics = live.metrics;
        if (detail.progress && !live.progress) live.progress = detail.progress;
        if (!live.logs.length) live.logs = detail.events.slice(-LOG_TAIL);
        this.details[id] = detail;
        this.upsert(detail.run);
        return detail;
      } catch (error) {
        this.error = asError(error);
        return null;
      }
    },
    async start(config: TrainConfig): Promise<RunSummary | null> {
      this.starting = true;
      this.startError = null;
      try {
        const run = await studio().runs.start({ config });
        this.upsert(run);
        this.liveFor(run.id);
        this.currentRunId = run.id;
        return run;
      } catch (error) {
        this.startError = asError(error);
        return null;
      } finally {
        this.starting = false;
      }
    },
    async act(action: 'pause' | 'resume' | 'cancel', id: string): Promise<void> {
      this.error = null;
      try {
        this.upsert(await studio().runs[action]({ id }));
      } catch (error) {
        this.error = asError(error);
      }
    },
    async rename(id: string, name: string): Promise<void> {
      try {
        this.upsert(await studio().runs.rename({ id, name }));
      } catch (error) {
        this.error = asError(error);
      }
    },
    async setTags(id: string, tags: string[]): Promise<void> {
      try {
        this.upsert(await studio().runs.setTags({ id, tags }));
      } catch (error) {
        this.error = asError(error);
      }
    },
    async remove(id: string): Promise<boolean> {
      try {
        await studio().runs.remove({ id });
        this.forget(id);
        return true;
      } catch (error) {
        this.error = asError(error);
        return false;
      }
    },
  },
});
