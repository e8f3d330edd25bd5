/** What writing a report page returns, whichever JSON it was drawn from. */

/** A report.html written beside the JSON file it was drawn from. */
export interface WrittenPage {
  /** path of the written report.html */
  path: string;
  /** path of the JSON file it was drawn from (conversion-report.json or sweep.json) */
  source: string;
  /** bytes written */
  bytes: number;
}
