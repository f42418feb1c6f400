// The one place that names the vendored view library (vendor/manifest.json says what
// it is and how to update it): Preact components written with htm's tagged templates.
export {
  html,
  render,
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "../vendor/preact-htm.js";
