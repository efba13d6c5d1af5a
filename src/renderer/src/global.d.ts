import type { StudioClient } from '../../shared/api';

declare global {
  interface Window {
    /** Set by the preload script in the desktop app; absent in a browser. */
    studio?: StudioClient;
  }
}
