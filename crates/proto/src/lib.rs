//! Generated tonic/prost code for Agora's gRPC contracts and event payloads. Nothing else lives
//! here: no hand-written logic, so every service can depend on it without pulling in more.

pub mod user {
    pub mod v1 {
        tonic::include_proto!("agora.user.v1");
    }
}

pub mod post {
    pub mod v1 {
        tonic::include_proto!("agora.post.v1");
    }
}

pub mod graph {
    pub mod v1 {
        tonic::include_proto!("agora.graph.v1");
    }
}

pub mod feed {
    pub mod v1 {
        tonic::include_proto!("agora.feed.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("agora.notification.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("agora.events.v1");
    }
}
