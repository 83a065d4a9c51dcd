# qkdn_northbound: REST API on the shared HTTP server (base/net) (Boost.JSON, Boost.URL), /metrics, and the
# OpenAPI document (northbound/openapi.json) embedded at build time.
set(QKDN_OPENAPI_JSON ${CMAKE_CURRENT_LIST_DIR}/../openapi.json)
set(QKDN_OPENAPI_CPP ${CMAKE_CURRENT_BINARY_DIR}/openapi_embed.cpp)
add_custom_command(
  OUTPUT ${QKDN_OPENAPI_CPP}
  COMMAND ${CMAKE_COMMAND} -DINPUT=${QKDN_OPENAPI_JSON} -DOUTPUT=${QKDN_OPENAPI_CPP}
          -DSYMBOL=kOpenApiDocument -P ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
  DEPENDS ${QKDN_OPENAPI_JSON} ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
  COMMENT "Embedding northbound/openapi.json")

add_library(qkdn_northbound STATIC
  ${CMAKE_CURRENT_LIST_DIR}/api_server.cpp
  ${CMAKE_CURRENT_LIST_DIR}/api_util.cpp
  ${CMAKE_CURRENT_LIST_DIR}/auth.cpp
  ${CMAKE_CURRENT_LIST_DIR}/idempotency.cpp
  ${CMAKE_CURRENT_LIST_DIR}/json_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_network.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_routing.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_state.cpp
  ${QKDN_OPENAPI_CPP}
)
target_include_directories(qkdn_northbound PUBLIC ${CMAKE_CURRENT_LIST_DIR}/../include)
target_link_libraries(qkdn_northbound
  PUBLIC qkdn_service qkdn_core Boost::headers OpenSSL::SSL Threads::Threads
  PRIVATE qkdn_net qkdn_southbound Boost::json Boost::url OpenSSL::Crypto qkdn_options)
