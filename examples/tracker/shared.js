// TEMPORARY until createSharedCache lands.
export const sharedKind = 'none';
export const shared = undefined;
