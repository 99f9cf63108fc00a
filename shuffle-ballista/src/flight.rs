//! The executor's Arrow Flight service: a job's results served from Shovel.
//!
//! Ballista's client fetches the last stage's partitions from the executor
//! that reported them, over Flight (`do_get` with a `FetchPartition`
//! ticket: job, stage, partition and the location's `file_id`). Ballista
//! lets an executor replace its Flight service
//! (`override_arrow_flight_service`); Shovel's wraps Ballista's own:
//!
//! ```text
//!  do_get(FetchPartition{job, stage, partition, file_id})
//!     file_id has Shovel's mark ─▶ MapOutputId (crate::ids) ─▶ committed map status
//!                                  ─▶ shuffle_arrow::read_partitions(partition) ─▶ FlightData (lz4)
//!     otherwise                 ─▶ Ballista's service (a file in the work directory)
//!  do_action(IO_BLOCK_TRANSPORT) with Shovel's mark ─▶ refused: readers read the store
//!  every other call             ─▶ Ballista's service
//! ```
//!
//! The manager and schema of a stage come from the engine, which saw the
//! stage's plan when it ran its tasks ([`crate::engine`]). Every fetch is
//! counted by where it was served from ([`crate::EngineCounters`]), so a
//! test can show that only the client fetched, and only the last stage.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use ballista_core::error::BallistaError;
use ballista_core::serde::decode_protobuf;
use ballista_core::serde::scheduler::Action as BallistaAction;
use ballista_core::utils::{create_grpc_server, GrpcServerConfig};
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::shutdown::Shutdown;
use ballista_executor::ArrowFlightServerProvider;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::ipc::CompressionType;
use futures::{Stream, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::engine::ShovelExecutionEngine;
use crate::ids::{is_shovel_file_id, MapOutputId};

type BoxedFlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Ballista's largest gRPC message, both ways (its executor's default).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The provider Ballista's executor calls to start its Flight server.
pub fn flight_server_provider(
    engine: Arc<ShovelExecutionEngine>,
) -> Arc<ArrowFlightServerProvider> {
    Arc::new(
        move |work_dir: String,
              address: SocketAddr,
              mut shutdown: Shutdown,
              grpc: GrpcServerConfig| {
            let service = ShovelFlightService {
                ballista: BallistaFlightService::new(work_dir),
                engine: Arc::clone(&engine),
            };
            tokio::spawn(async move {
                create_grpc_server(&grpc)
                    .add_service(
                        FlightServiceServer::new(service)
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(MAX_MESSAGE_BYTES),
                    )
                    .serve_with_shutdown(address, shutdown.recv())
                    .await
                    .map_err(BallistaError::TonicError)
            })
        },
    )
}

/// Ballista's Flight service, with Shovel's outputs served from the store
/// (see the module docs).
pub struct ShovelFlightService {
    ballista: BallistaFlightService,
    engine: Arc<ShovelExecutionEngine>,
}

impl ShovelFlightService {
    /// Streams partition `partition` of the map output `file_id` names.
    async fn serve_from_store(
        &self,
        job_id: &str,
        stage_id: usize,
        partition: usize,
        file_id: Option<u64>,
    ) -> Result<BoxedFlightStream<FlightData>, Status> {
        let at = || {
            format!(
                "Shovel on Ballista: serving job {job_id} stage {stage_id} partition {partition}"
            )
        };
        let source = self.engine.stage_source(job_id, stage_id).ok_or_else(|| {
            Status::not_found(format!(
                "{}: this executor did not run the stage (or ran it more than {} stages ago); \
                 fetch it from the executor that reported it",
                at(),
                crate::engine::STAGE_SOURCES
            ))
        })?;
        let id = MapOutputId::from_file_id(stage_id, file_id)
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", at())))?;
        let shuffle_id = id.shuffle_id();
        let status = source
            .manager
            .committed_map_status(shuffle_id, id.task_id)
            .await
            .map_err(|e| {
                Status::not_found(format!(
                    "{} (shuffle {shuffle_id} map {}): {e}",
                    at(),
                    id.task_id
                ))
            })?;
        let p = u32::try_from(partition)
            .map_err(|_| Status::invalid_argument(format!("{}: partition too large", at())))?;
        let reader = shuffle_arrow::read_partitions(
            source.manager.as_ref(),
            shuffle_id,
            vec![status],
            p..p + 1,
            Arc::clone(&source.schema),
        )
        .map_err(|e| Status::internal(format!("{}: {e}", at())))?;
        let batches = reader.map_err(move |e| {
            FlightError::ExternalError(Box::new(std::io::Error::other(format!(
                "Shovel on Ballista: reading job's stage {stage_id} partition {partition}: {e}"
            ))))
        });
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .map_err(|e| Status::internal(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(source.schema)
            .with_options(options)
            .build(batches)
            .map_err(|e| Status::from_error(Box::new(e)));
        Ok(Box::pin(stream))
    }
}

/// The partition a Flight ticket or action body asks for.
struct Fetch {
    job_id: String,
    stage_id: usize,
    partition: usize,
    file_id: Option<u64>,
}

impl Fetch {
    /// Decodes Ballista's `FetchPartition` action (its only one).
    fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let action = decode_protobuf(bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let BallistaAction::FetchPartition {
            job_id,
            stage_id,
            partition_id,
            file_id,
            ..
        } = action;
        Ok(Self {
            job_id: job_id.to_string(),
            stage_id,
            partition: partition_id,
            file_id,
        })
    }

    /// A Shovel map output's partition (a location with Shovel's mark).
    fn is_in_store(&self) -> bool {
        is_shovel_file_id(self.file_id)
    }
}

#[tonic::async_trait]
impl FlightService for ShovelFlightService {
    type DoActionStream = BoxedFlightStream<arrow_flight::Result>;
    type DoExchangeStream = BoxedFlightStream<FlightData>;
    type DoGetStream = BoxedFlightStream<FlightData>;
    type DoPutStream = BoxedFlightStream<PutResult>;
    type HandshakeStream = BoxedFlightStream<HandshakeResponse>;
    type ListActionsStream = BoxedFlightStream<ActionType>;
    type ListFlightsStream = BoxedFlightStream<FlightInfo>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let f = Fetch::decode(&request.get_ref().ticket)?;
        self.engine
            .counters()
            .record_flight_fetch(f.stage_id, f.is_in_store());
        if f.is_in_store() {
            let stream = self
                .serve_from_store(&f.job_id, f.stage_id, f.partition, f.file_id)
                .await?;
            return Ok(Response::new(stream));
        }
        self.ballista.do_get(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        if let Ok(f) = Fetch::decode(&request.get_ref().body) {
            if f.is_in_store() {
                return Err(Status::failed_precondition(format!(
                    "job {} stage {} partition {} is in Shovel's store: \
                     read it with Shovel's shuffle reader, not as a Flight block transfer",
                    f.job_id, f.stage_id, f.partition
                )));
            }
            self.engine
                .counters()
                .record_flight_fetch(f.stage_id, false);
        }
        self.ballista.do_action(request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.ballista.get_schema(request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ballista.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.ballista.poll_flight_info(request).await
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.ballista.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.ballista.list_flights(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.ballista.do_put(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.ballista.list_actions(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.ballista.do_exchange(request).await
    }
}
