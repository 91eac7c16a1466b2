/**
 * What the widgets that show something fetched from the lab (the proxy's configuration, the
 * routers) share: fetch again a moment after every status change (a burst of changes: one fetch),
 * and keep only the newest answer (an older one that arrives late is dropped).
 */

/**
 * Calls `fetch` `delayMs` after the lab's status changes (and once it first has one), and hands
 * `apply` the answer unless a newer fetch has begun since. Call it while a component initialises:
 * it sets up an `$effect`, cleared with the component.
 * @returns the same fetch-and-apply, for a Reload button.
 */
export function refetchOnStatus<T>(
  lab: { readonly status: unknown },
  fetch: () => Promise<T>,
  apply: (answer: T) => void | Promise<void>,
  delayMs = 200,
): () => Promise<void> {
  let seq = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  async function load() {
    const mine = ++seq;
    const answer = await fetch();
    if (mine !== seq) return;
    await apply(answer);
  }
  $effect(() => {
    if (!lab.status) return;
    clearTimeout(timer);
    timer = setTimeout(() => void load(), delayMs);
    return () => clearTimeout(timer);
  });
  return load;
}
