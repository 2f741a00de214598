#include "platform/config.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace kiln::config {
namespace {

Schema test_schema() {
  Schema s;
  Setting listen;
  listen.key = "http.listen";
  listen.type = Type::Endpoint;
  listen.default_value = "127.0.0.1:7700";
  s.add(listen);
  Setting n;
  n.key = "http.max_body_bytes";
  n.type = Type::Int;
  n.default_value = "1024";
  n.min = 0;
  n.max = 4096;
  s.add(n);
  Setting level;
  level.key = "log.level";
  level.type = Type::Enum;
  level.default_value = "info";
  level.choices = {"debug", "info"};
  s.add(level);
  Setting secret;
  secret.key = "auth.jwt_secret";
  secret.secret = true;
  s.add(secret);
  Setting b;
  b.key = "http.access_log";
  b.type = Type::Bool;
  b.default_value = "true";
  s.add(b);
  return s;
}

TEST(Config, DefaultsApplyWhenNothingIsSet) {
  auto schema = test_schema();
  auto cfg = Loader(schema).finish();
  EXPECT_EQ(cfg.str("http.listen"), "127.0.0.1:7700");
  EXPECT_EQ(cfg.integer("http.max_body_bytes"), 1024);
  EXPECT_TRUE(cfg.boolean("http.access_log"));
  EXPECT_EQ(cfg.source("log.level"), Source::Default);
}

TEST(Config, FlagsBeatEnvironmentWhichBeatsFile) {
  auto schema = test_schema();
  auto cfg =
      Loader(schema)
          .yaml_text("http:\n  listen: 0.0.0.0:1\n  max_body_bytes: 10\nlog:\n  level: debug\n",
                     "test.yaml")
          .env({{"KILN_HTTP_LISTEN", "0.0.0.0:2"}, {"KILN_HTTP_MAX_BODY_BYTES", "20"}})
          .flag("http.listen", "0.0.0.0:3")
          .finish();
  EXPECT_EQ(cfg.str("http.listen"), "0.0.0.0:3");
  EXPECT_EQ(cfg.source("http.listen"), Source::Flag);
  EXPECT_EQ(cfg.integer("http.max_body_bytes"), 20);
  EXPECT_EQ(cfg.source("http.max_body_bytes"), Source::Env);
  EXPECT_EQ(cfg.str("log.level"), "debug");
  EXPECT_EQ(cfg.source("log.level"), Source::File);
}

TEST(Config, DottedKeysInYamlWorkLikeNestedOnes) {
  auto schema = test_schema();
  auto cfg = Loader(schema).yaml_text("http.max_body_bytes: 7\n", "t").finish();
  EXPECT_EQ(cfg.integer("http.max_body_bytes"), 7);
}

TEST(Config, ErrorNamesSettingValueAndWhatIsAllowed) {
  auto schema = test_schema();
  try {
    (void)Loader(schema).flag("http.max_body_bytes", "5000").finish();
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("http.max_body_bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("'5000'"), std::string::npos) << m;
    EXPECT_NE(m.find("an integer from 0 to 4096"), std::string::npos) << m;
    EXPECT_NE(m.find("--http-max-body-bytes"), std::string::npos) << m;
  }
}

TEST(Config, RejectsEveryKindOfBadValue) {
  auto schema = test_schema();
  EXPECT_THROW(Loader(schema).flag("http.max_body_bytes", "12abc"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.max_body_bytes", ""), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.max_body_bytes", "-1"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("log.level", "loud"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.access_log", "maybe"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.listen", "nocolon"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.listen", "host:70000"), ConfigError);
  EXPECT_THROW(Loader(schema).flag("http.listen", ":80"), ConfigError);
  EXPECT_NO_THROW(Loader(schema).flag("http.listen", "[::1]:0"));
  EXPECT_NO_THROW(Loader(schema).flag("http.listen", "localhost:8080"));
}

TEST(Config, UnknownSettingsAreErrorsEverywhere) {
  auto schema = test_schema();
  EXPECT_THROW(Loader(schema).yaml_text("http:\n  lisen: x\n", "t"), ConfigError);
  EXPECT_THROW(Loader(schema).env({{"KILN_HTTP_LISEN", "x"}}), ConfigError);
  EXPECT_NO_THROW(Loader(schema).env({{"HOME", "/root"}}));  // not ours: ignored
}

TEST(Config, MalformedYamlIsAClearError) {
  auto schema = test_schema();
  try {
    Loader(schema).yaml_text("http: [unclosed\n", "bad.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.yaml: not valid YAML"), std::string::npos);
  }
  EXPECT_THROW(Loader(schema).yaml_text("- a\n- b\n", "list.yaml"), ConfigError);
  EXPECT_THROW(Loader(schema).yaml_text("http:\n  listen: [a, b]\n", "t"), ConfigError);
  EXPECT_NO_THROW(Loader(schema).yaml_text("", "empty.yaml"));
}

TEST(Config, MissingFileIsAClearError) {
  auto schema = test_schema();
  try {
    Loader(schema).file("/nonexistent/kiln.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/kiln.yaml"), std::string::npos);
  }
}

TEST(Config, SecretsAreNeverShown) {
  auto schema = test_schema();
  auto cfg = Loader(schema).flag("auth.jwt_secret", "hunter2-very-secret").finish();
  EXPECT_EQ(cfg.str("auth.jwt_secret"), "hunter2-very-secret");
  EXPECT_EQ(cfg.describe().find("hunter2"), std::string::npos);
  EXPECT_NE(cfg.describe().find("auth.jwt_secret = <redacted>"), std::string::npos);
  EXPECT_EQ(schema.markdown().find("hunter2"), std::string::npos);
}

TEST(Config, NamesForEnvironmentAndFlags) {
  Setting s;
  s.key = "http.max_body_bytes";
  EXPECT_EQ(s.env_name(), "KILN_HTTP_MAX_BODY_BYTES");
  EXPECT_EQ(s.flag_name(), "--http-max-body-bytes");
}

TEST(Config, MarkdownListsEverySetting) {
  auto schema = test_schema();
  auto md = schema.markdown();
  for (const auto& s : schema.settings()) {
    EXPECT_NE(md.find("`" + s.key + "`"), std::string::npos) << s.key;
    EXPECT_NE(md.find(s.env_name()), std::string::npos) << s.key;
  }
}

}  // namespace
}  // namespace kiln::config

namespace kiln::config {
namespace {

TEST(SplitList, TrimsAndDropsEmptyItems) {
  EXPECT_EQ(split_list("a, b,,c ,"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_TRUE(split_list(" , ").empty());
  EXPECT_EQ(split_list("host:1"), (std::vector<std::string>{"host:1"}));
}

}  // namespace
}  // namespace kiln::config
