/**
 * Chooses a conversion's compute backend from the `device` option and records what the
 * last conversion ran on (for benchmarks and reports).
 */
import { usageError } from '../errors.js';
import { native } from '../native/binding.js';
import { CpuBackend } from './cpu.js';
import { CudaBackend } from './cuda.js';
import type { BackendStats, ComputeBackend, DeviceChoice } from './types.js';

/** Whether this addon has the CUDA conversion kernels and a GPU is present. */
export function cudaUsable(): boolean {
  const cu = native.convertCuda;
  return native.buildInfo().cuda && cu !== undefined && cu.available();
}

/**
 * The device a `device` option resolves to: 'auto' is CUDA when {@link cudaUsable}, else
 * the CPU; 'cuda' without CUDA is a usage error (ERR_NO_CUDA); anything else ERR_BAD_OPTION.
 */
export function resolveDevice(device: DeviceChoice | undefined): 'cpu' | 'cuda' {
  const d = device ?? 'auto';
  if (d !== 'auto' && d !== 'cpu' && d !== 'cuda') throw usageError('ERR_BAD_OPTION', `device must be 'auto', 'cpu' or 'cuda' (got ${String(d)})`);
  if (d === 'cpu') return 'cpu';
  const ok = cudaUsable();
  if (d === 'cuda' && !ok)
    throw usageError(
      'ERR_NO_CUDA',
      native.buildInfo().cuda ? "device 'cuda' was asked for, but no CUDA GPU is present" : "device 'cuda' needs the addon built with CUDA (npm run build:cuda)",
    );
  return ok ? 'cuda' : 'cpu';
}

/** A backend for `device`. */
export function createBackend(device: DeviceChoice | undefined): ComputeBackend {
  const backend = resolveDevice(device) === 'cuda' ? new CudaBackend() : new CpuBackend();
  lastBackend = backend;
  return backend;
}

let lastBackend: ComputeBackend | null = null;

/** The device, name and counters of the most recent conversion's backend in this process (null before any). */
export function lastBackendInfo(): { device: 'cpu' | 'cuda'; name: string; stats: BackendStats } | null {
  return lastBackend ? { device: lastBackend.device, name: lastBackend.name, stats: { ...lastBackend.stats } } : null;
}
