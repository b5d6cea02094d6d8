/** The bottom floor: types only. */
export type * from "./request";
export type * from "./decision";
export type * from "./verified";
export type * from "./context";
export type * from "./events";
