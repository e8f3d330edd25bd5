/** Environment of the memory tests' child processes (test/helpers/rss-*.ts); no side effects, for the test files. */

/**
 * Environment for a memory-test child: glibc's mmap threshold fixed at 128 KiB (large
 * buffers are unmapped when freed instead of staying in the heap by the dynamic
 * threshold) and at most 2 malloc arenas, so RSS follows the live data.
 */
export function rssChildEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GQA2MLA_THREADS: '2', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '2' };
}
