// Shared by the fuzz target and the corpus replay test (included, not a module).

/// The first byte picks the body type, the rest is the body: decoding must not panic, and what
/// decodes must encode and decode back to the same value. Returns whether it decoded.
pub fn check(data: &[u8]) -> bool {
    use bridge_mimi::wire::*;

    fn round_trip<T: WireBody + PartialEq + std::fmt::Debug>(body: &[u8]) -> bool {
        let Ok(value) = T::decode(body) else {
            return false;
        };
        let encoded = value.encode().expect("a decoded body encodes");
        assert_eq!(T::decode(&encoded).expect("re-decodes"), value);
        true
    }

    let Some((selector, body)) = data.split_first() else {
        return false;
    };
    match selector % 10 {
        0 => round_trip::<KeyMaterialRequest>(body),
        1 => round_trip::<KeyMaterialResponse>(body),
        2 => round_trip::<UpdateRequest>(body),
        3 => round_trip::<UpdateRoomResponse>(body),
        4 => round_trip::<SubmitMessageRequest>(body),
        5 => round_trip::<SubmitMessageResponse>(body),
        6 => round_trip::<NotifyBody>(body),
        7 => round_trip::<GroupInfoRequest>(body),
        8 => round_trip::<GroupInfoResponse>(body),
        _ => round_trip::<GroupInfoRatchetTreeTbe>(body),
    }
}
