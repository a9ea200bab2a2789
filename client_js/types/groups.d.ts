/**
 * Installs the group part of jatos.js on `jatos` (which has the batch
 * session installed: groups follow its channel).
 * @param {any} jatos
 */
export function installGroups(jatos: any): void;
export type BatchChannel = import("./cohort.js").BatchChannel;
export type SessionEvent = import("./cohort.js").SessionEvent;
/**
 * (all optional, as in jatos.js)
 */
export type GroupCallbacks = {
    /**
     * this participant is in a group (joined, or
     * already a member when the page loaded)
     */
    onOpen?: (memberId?: string) => void;
    /**
     * this participant is out of the group (left, or the page's
     * channel closed for good)
     */
    onClose?: () => void;
    /**
     * a group call failed and had no onFail of its own
     */
    onError?: (error: any) => void;
    /**
     * a message from another member (Cohort adds the sender's member id and details)
     */
    onMessage?: (msg: any, sender: string, info: {
        to: string | null;
        group: string;
        pos: string;
    }) => void;
    /**
     * another member joined
     */
    onMemberJoin?: (memberId: string) => void;
    /**
     * another member's channel opened (also right
     * after it joined)
     */
    onMemberOpen?: (memberId: string) => void;
    /**
     * another member left
     */
    onMemberLeave?: (memberId: string) => void;
    /**
     * another member's channel closed (the server
     * says so after a grace period)
     */
    onMemberClose?: (memberId: string) => void;
    /**
     * the group session changed: once per
     * operation, own changes included; `('', 'replace')` after a resync
     */
    onGroupSession?: (path: string, op: string) => void;
    /**
     * after any of onMemberJoin, onMemberOpen, onMemberLeave,
     * onMemberClose, onGroupSession, and when the group is fixed or reassigned
     */
    onUpdate?: () => void;
    /**
     * (Cohort) the batch forms groups by arrival: this participant waits
     * in the lobby until enough arrive (`joinGroup` resolves when the group forms)
     */
    onWaiting?: () => void;
};
export type GroupInfo = {
    /**
     * the group's id
     */
    groupResultId: string;
    /**
     * this participant's member id (its run id)
     */
    memberId: string | null;
    /**
     * active members
     */
    members: string[];
    /**
     * members whose channel is open
     */
    channels: string[];
    /**
     * `STARTED`, `FIXED` or `FINISHED` (JATOS's names)
     */
    state: string;
    /**
     * the batch's limit (null: none)
     */
    maxActiveMembers: number | null;
    maxTotalMembers: number | null;
};
