/**
 * Installs the result part of jatos.js on `jatos` (after the study run, whose
 * `jatos._run` it uses).
 * @param {any} jatos
 * @param {import('./run.js').RunHost} host
 */
export function installResults(jatos: any, host: import("./run.js").RunHost): void;
export type OverlayConfig = {
    /**
     * default "Please wait."
     */
    text?: string;
    /**
     * an image instead of the spinner
     */
    imgUrl?: string;
    /**
     * default true
     */
    showImg?: boolean;
    /**
     * extra CSS for the box
     */
    style?: string;
};
