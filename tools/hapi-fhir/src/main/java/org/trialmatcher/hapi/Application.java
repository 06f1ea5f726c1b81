package org.trialmatcher.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;

/**
 * A local HAPI FHIR JPA server: R4, H2 in memory, base /fhir. HAPI's own JPA configuration
 * (FhirConfig) replaces Spring Boot's JPA auto-configuration.
 */
@SpringBootApplication(
		exclude = {
			HibernateJpaAutoConfiguration.class,
			ElasticsearchRestClientAutoConfiguration.class,
			QuartzAutoConfiguration.class,
			ThymeleafAutoConfiguration.class
		})
public class Application {
	public static void main(String[] args) {
		SpringApplication.run(Application.class, args);
	}
}
