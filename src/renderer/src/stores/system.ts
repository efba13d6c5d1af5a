import { defineStore } from 'pinia';
import type { BackendInfo, SystemInfo } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import { studio } from '../api';
import { asError } from '../format';

/** Host facts: app data folder, versions, capabilities, and the tfjs backend report. */
export const useSystemStore = defineStore('system', {
  state: () => ({
    info: null as SystemInfo | null,
    backend: null as BackendInfo | null,
    loading: false,
    backendLoading: false,
    error: null as ErrorPayload | null,
    backendError: null as ErrorPayload | null,
  }),
  getters: {
    capabilities: (state) => state.info?.capabilities,
    reasonUnavailable: (state) => (name: keyof SystemInfo['capabilities']) =>
      state.info?.unavailable[name] ?? 'not available in this build',
  },
  actions: {
    async load(): Promise<void> {
      if (this.loading) return;
      this.loading = true;
      this.error = null;
      try {
        this.info = await studio().system.info();
      } catch (error) {
        this.error = asError(error);
      } finally {
        this.loading = false;
      }
    },
    async loadBackend(): Promise<void> {
      this.backendLoading = true;
      this.backendError = null;
      try {
        this.backend = await studio().system.backend();
      } catch (error) {
        this.backendError = asError(error);
      } finally {
        this.backendLoading = false;
      }
    },
  },
});
